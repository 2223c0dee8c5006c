// Side-by-side comparison pictures: images of different sizes (e.g. a
// low-resolution measurement) are scaled by pixel repetition to a common
// height, separated by white gutters, each with a short caption above it.
#pragma once
#include <torch/types.h>

#include <string>
#include <vector>

namespace ud2m {

struct PanelItem {
  std::string caption;  // printable ASCII; drawn with a built-in 5x7 font
  torch::Tensor image;  // (1, C, H, W) in [0, 1], C = 1 or 3
};

torch::Tensor make_panel(const std::vector<PanelItem>& items);

// (N, C, H, W) images -> one (1, C, rows·H, cols·W) grid with ⌈√N⌉ columns,
// empty cells white.
torch::Tensor make_grid(const torch::Tensor& images);

}  // namespace ud2m
