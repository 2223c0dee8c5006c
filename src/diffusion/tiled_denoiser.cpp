#include "diffusion/tiled_denoiser.hpp"

#include "core/error.hpp"

namespace ud2m::diffusion {

TiledDenoiser::TiledDenoiser(DenoiserPtr inner, int64_t tile, int64_t overlap, int64_t batch)
    : inner_(std::move(inner)), tile_(tile), overlap_(overlap), batch_(batch) {
  UD2M_CHECK(tile > 0 && overlap > 0 && overlap < tile, "tiles need 0 < overlap < tile, not tile {} and overlap {}",
             tile, overlap);
  UD2M_CHECK(batch > 0, "tiles per network call must be positive, not {}", batch);
}

std::vector<int64_t> TiledDenoiser::origins(int64_t size) const {
  if (size <= tile_) return {0};
  // As few tiles as keep neighbours overlapping by at least `overlap`, spread evenly.
  const int64_t count = (size - overlap_ + (tile_ - overlap_) - 1) / (tile_ - overlap_);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < count; ++i) out.push_back(i * (size - tile_) / (count - 1));
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

torch::Tensor TiledDenoiser::epsilon(const torch::Tensor& x_t, const torch::Tensor& t) {
  const int64_t n = x_t.size(0), h = x_t.size(2), w = x_t.size(3);
  if (h * w <= 4 * tile_ * tile_) return inner_->epsilon(x_t, t);
  const auto rows = origins(h), cols = origins(w);
  const int64_t th = std::min(h, tile_), tw = std::min(w, tile_);
  auto options = x_t.options().dtype(torch::kFloat32).requires_grad(false);
  auto weight = (ramp(th, overlap_, options).unsqueeze(1) * ramp(tw, overlap_, options).unsqueeze(0)).to(x_t.dtype());

  std::vector<std::pair<int64_t, int64_t>> windows;
  for (auto r : rows)
    for (auto c : cols) windows.emplace_back(r, c);
  auto sum = torch::zeros_like(x_t);
  auto total = torch::zeros({h, w}, weight.options());
  for (size_t first = 0; first < windows.size(); first += batch_) {
    const size_t last = std::min(windows.size(), first + batch_);
    std::vector<torch::Tensor> crops;
    for (size_t k = first; k < last; ++k)
      crops.push_back(x_t.narrow(2, windows[k].first, th).narrow(3, windows[k].second, tw));
    const auto count = static_cast<int64_t>(last - first);
    auto eps = inner_->epsilon(torch::cat(crops), t.repeat({count}));
    for (int64_t k = 0; k < count; ++k) {
      const auto [r, c] = windows[first + k];
      auto tile_eps = eps.narrow(0, k * n, n);
      // Out of place, so that gradients (DPS) flow through every tile.
      sum = sum + torch::constant_pad_nd(tile_eps * weight, {c, w - c - tw, r, h - r - th});
      total.narrow(0, r, th).narrow(1, c, tw).add_(weight);
    }
  }
  return sum / total;
}

}  // namespace ud2m::diffusion
