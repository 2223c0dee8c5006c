#include "diffusion/tiled_denoiser.hpp"

#include "core/error.hpp"

namespace ud2m::diffusion {

void Tiling::check() const {
  UD2M_CHECK(tile > 0 && overlap > 0 && overlap < tile, "tiles need 0 < overlap < tile, not tile {} and overlap {}",
             tile, overlap);
  UD2M_CHECK(batch > 0, "tiles per network call must be positive, not {}", batch);
}

std::vector<int64_t> Tiling::origins(int64_t size) const {
  if (size <= tile) return {0};
  const int64_t count = (size - overlap + (tile - overlap) - 1) / (tile - overlap);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < count; ++i) out.push_back(i * (size - tile) / (count - 1));
  return out;
}

namespace {
// 1 in the middle, falling linearly to 1/(overlap+1) at both ends: positive
// everywhere, so a pixel covered by one tile alone takes that tile's value.
torch::Tensor ramp(int64_t length, int64_t overlap, const torch::TensorOptions& options) {
  auto i = torch::arange(length, options);
  auto distance = torch::minimum(i, length - 1 - i);
  return torch::clamp((distance + 1) / double(overlap + 1), 0.0, 1.0);
}
}  // namespace

torch::Tensor run_in_tiles(const torch::Tensor& x, const Tiling& tiling, const TileNetwork& network) {
  tiling.check();
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  const int64_t th = std::min(h, tiling.tile), tw = std::min(w, tiling.tile);
  auto options = x.options().dtype(torch::kFloat32).requires_grad(false);
  auto weight = (ramp(th, tiling.overlap, options).unsqueeze(1) * ramp(tw, tiling.overlap, options).unsqueeze(0))
                    .to(x.dtype());
  std::vector<std::pair<int64_t, int64_t>> windows;
  for (auto r : tiling.origins(h))
    for (auto c : tiling.origins(w)) windows.emplace_back(r, c);

  torch::Tensor sum;  // shaped by the network's output, whose channels may differ from x's
  auto total = torch::zeros({h, w}, weight.options());
  for (size_t first = 0; first < windows.size(); first += tiling.batch) {
    const size_t last = std::min(windows.size(), first + static_cast<size_t>(tiling.batch));
    std::vector<torch::Tensor> crops;
    for (size_t k = first; k < last; ++k)
      crops.push_back(x.narrow(2, windows[k].first, th).narrow(3, windows[k].second, tw));
    const auto count = static_cast<int64_t>(last - first);
    auto out = network(torch::cat(crops), count);
    for (int64_t k = 0; k < count; ++k) {
      const auto [r, c] = windows[first + k];
      // Out of place, so that gradients flow through every tile.
      auto placed = torch::constant_pad_nd(out.narrow(0, k * n, n) * weight, {c, w - c - tw, r, h - r - th});
      sum = sum.defined() ? sum + placed : placed;
      total.narrow(0, r, th).narrow(1, c, tw).add_(weight);
    }
  }
  return sum / total;
}

TiledDenoiser::TiledDenoiser(DenoiserPtr inner, Tiling tiling) : inner_(std::move(inner)), tiling_(tiling) {
  tiling_.check();  // at construction, before the first pass
}

torch::Tensor TiledDenoiser::epsilon(const torch::Tensor& x_t, const torch::Tensor& t) {
  if (!tiling_.applies_to(x_t)) return inner_->epsilon(x_t, t);
  return run_in_tiles(x_t, tiling_,
                      [&](const torch::Tensor& tiles, int64_t copies) { return inner_->epsilon(tiles, t.repeat({copies})); });
}

}  // namespace ud2m::diffusion
