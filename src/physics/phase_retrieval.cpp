#include "physics/phase_retrieval.hpp"

#include <torch/torch.h>

#include <cmath>

#include "core/error.hpp"
#include "physics/serialize.hpp"

namespace ud2m::physics {

PhaseRetrieval::PhaseRetrieval(int64_t height, int64_t width, int64_t oversampling, bool random_phase,
                               uint64_t seed)
    : height_(height), width_(width), oversampling_(oversampling), random_phase_(random_phase), seed_(seed) {
  UD2M_CHECK(oversampling >= 1 && oversampling <= 16, "phase retrieval oversampling must be in 1..16, not {}",
             oversampling);
  if (random_phase) {
    auto rng = at::make_generator<at::CPUGeneratorImpl>(seed);
    auto theta = 2 * M_PI * at::rand({height, width}, rng, torch::TensorOptions().dtype(torch::kFloat64));
    phase_ = torch::polar(torch::ones_like(theta), theta);
  }
}

torch::Tensor PhaseRetrieval::forward(const torch::Tensor& x) const {
  UD2M_CHECK(x.dim() == 4 && x.size(2) == height_ && x.size(3) == width_,
             "phase retrieval was built for {}x{} images, not input of shape {}", height_, width_, x.sizes().vec());
  auto v = (x + 1) / 2;  // intensities: non-negative, so no sign ambiguity
  if (random_phase_) {
    auto ctype = x.scalar_type() == torch::kFloat64 ? torch::kComplexDouble : torch::kComplexFloat;
    v = v * phase_.to(x.device(), ctype);
  }
  // fft2 with a larger size s zero-pads at the end of each dimension.
  auto F = torch::fft::fft2(v, std::vector<int64_t>{oversampling_ * height_, oversampling_ * width_}, {-2, -1},
                            "ortho");
  // |F|² through re² + im², which (unlike abs) has a gradient at 0.
  return torch::view_as_real(F).pow(2).sum(-1);
}

std::vector<int64_t> PhaseRetrieval::output_shape(const std::vector<int64_t>& s) const {
  return {s[0], s[1], s[2] * oversampling_, s[3] * oversampling_};
}

nlohmann::json PhaseRetrieval::to_json() const {
  return {{"type", name()},         {"height", height_},          {"width", width_},
          {"oversampling", oversampling_}, {"random_phase", random_phase_}, {"seed", seed_}};
}

std::shared_ptr<PhaseRetrieval> PhaseRetrieval::from_json(const nlohmann::json& j) {
  const std::string what = "phase_retrieval";
  return std::make_shared<PhaseRetrieval>(json_get<int64_t>(j, "height", what), json_get<int64_t>(j, "width", what),
                                          json_get<int64_t>(j, "oversampling", what),
                                          json_get<bool>(j, "random_phase", what), json_get<uint64_t>(j, "seed", what));
}

}  // namespace ud2m::physics
