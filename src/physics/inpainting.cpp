#include "physics/inpainting.hpp"

#include <torch/torch.h>

#include <cmath>

#include "core/error.hpp"
#include "core/image.hpp"
#include "physics/serialize.hpp"

namespace ud2m::physics {

Inpainting::Inpainting(torch::Tensor mask) : mask_((mask > 0.5).to(torch::kFloat32).contiguous()) {
  UD2M_CHECK(mask_.dim() == 2, "an inpainting mask must be 2-D, not of shape {}", mask_.sizes().vec());
}

torch::Tensor Inpainting::mask_for(const torch::Tensor& x) const {
  UD2M_CHECK(x.dim() == 4 && x.size(2) == mask_.size(0) && x.size(3) == mask_.size(1),
             "the inpainting mask is {}x{} but the input has shape {}", mask_.size(0), mask_.size(1),
             x.sizes().vec());
  return mask_.to(x.device(), x.scalar_type());
}

torch::Tensor Inpainting::forward(const torch::Tensor& x) const { return x * mask_for(x); }

torch::Tensor Inpainting::prox(const torch::Tensor& z, const torch::Tensor& y, double gamma) const {
  UD2M_CHECK(gamma >= 0, "prox step gamma must be non-negative, not {}", gamma);
  // (γm y + z)/(γm + 1) = z + w (y − z) with w = γm/(γm + 1) computed on the small (H, W) mask.
  auto m = mask_for(z);
  auto w = gamma * m / (gamma * m + 1);
  return torch::addcmul(z, w, y - z);
}

nlohmann::json Inpainting::to_json() const { return {{"type", name()}, {"mask", mask_to_json(mask_)}}; }

std::shared_ptr<Inpainting> Inpainting::from_json(const nlohmann::json& j) {
  return std::make_shared<Inpainting>(mask_from_json(json_get<nlohmann::json>(j, "mask", "inpainting")));
}

torch::Tensor random_mask(int64_t height, int64_t width, double fraction_missing, uint64_t seed) {
  UD2M_CHECK(fraction_missing >= 0 && fraction_missing <= 1,
             "the fraction of missing pixels must be in [0, 1], not {}", fraction_missing);
  auto rng = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t n = height * width;
  const auto missing = int64_t(std::llround(fraction_missing * double(n)));
  auto mask = torch::ones({n}, torch::kFloat32);
  mask.index_fill_(0, at::randperm(n, rng, torch::kLong).slice(0, 0, missing), 0.0);
  return mask.view({height, width});
}

torch::Tensor box_mask(int64_t height, int64_t width, int64_t box_h, int64_t box_w) {
  UD2M_CHECK(box_h >= 0 && box_w >= 0 && box_h <= height && box_w <= width,
             "the {}x{} inpainting box does not fit in the {}x{} image", box_h, box_w, height, width);
  auto mask = torch::ones({height, width}, torch::kFloat32);
  const int64_t top = (height - box_h) / 2, left = (width - box_w) / 2;
  mask.slice(0, top, top + box_h).slice(1, left, left + box_w).zero_();
  return mask;
}

torch::Tensor load_mask_file(const std::string& path, int64_t height, int64_t width) {
  auto m = read_image(path, 1)[0][0];
  UD2M_CHECK(m.size(0) == height && m.size(1) == width, "mask {} is {}x{} but the image is {}x{}", path, m.size(0),
             m.size(1), height, width);
  return (m > 0.5).to(torch::kFloat32);
}

}  // namespace ud2m::physics
