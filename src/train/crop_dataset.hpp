// Random square crops from a few photographs at several scales, with flips and
// 90° rotations: how a prior is trained when only dozens of photos exist.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

namespace ud2m::train {

// Image paths from a folder (recursively: .png/.jpg/.jpeg) or from a text file
// listing one path per line ('#' comments allowed).
std::vector<std::string> list_images(const std::string& folder_or_list);

class CropDataset {
 public:
  // Each photo is kept (as uint8) resized so its short side is crop·2^k for
  // k = 0..levels−1 (levels larger than the photo are skipped).
  CropDataset(const std::vector<std::string>& paths, int crop, int levels = 4);
  // (n, 3, crop, crop) in [-1, 1]; all randomness from `rng`.
  torch::Tensor batch(int n, torch::Generator& rng) const;
  size_t photos() const { return photos_; }
  size_t pyramid_images() const { return images_.size(); }

 private:
  int crop_;
  size_t photos_ = 0;
  std::vector<torch::Tensor> images_;  // (3, H, W) uint8, every level of every photo
};

}  // namespace ud2m::train
