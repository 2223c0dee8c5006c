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

std::optional<LangevinPreconditioner> PhaseRetrieval::langevin_preconditioner(const torch::Tensor& x, double prior_var,
                                                                              double noise_var) const {
  if (random_phase_) return std::nullopt;
  const int64_t h = height_, w = width_, ph = oversampling_ * h, pw = oversampling_ * w;
  torch::Tensor weights;  // on the image's own frequency grid, per image and channel
  {
    torch::NoGradGuard no_grad;
    // The data curvature Pᵀ F* diag(|z(ω)|²) F P (Gauss–Newton, in x) is a
    // Toeplitz operator on the image: its lags t(k) are the inverse DFT of
    // |z|² on the padded grid. T. Chan's optimal circulant approximation
    // c(k) = ((H−k)·t(k) + k·t(k−H))/H per axis diagonalises on the image's
    // grid; its eigenvalues λ = DFT(c) stand in for the curvature.
    auto lags = torch::real(torch::fft::ifft2(forward(x.detach())));
    auto ramp = [&](int64_t n) { return torch::arange(n, lags.options()) / n; };
    auto rows_far = ramp(h).view({h, 1}), cols_far = ramp(w).view({1, w});
    auto block = [&](int64_t row, int64_t col) { return lags.narrow(-2, row, h).narrow(-1, col, w); };
    auto circulant = (1 - rows_far) * (1 - cols_far) * block(0, 0) + rows_far * (1 - cols_far) * block(ph - h, 0) +
                     (1 - rows_far) * cols_far * block(0, pw - w) + rows_far * cols_far * block(ph - h, pw - w);
    // ×2: a margin for what the approximation drops (the residual term of the
    // Hessian, the Toeplitz-to-circulant error), so that fewer proposals are
    // rejected.
    auto curvature = 2 * torch::real(torch::fft::fft2(circulant)).clamp_min(0);
    weights = 1 / (1 / prior_var + curvature / noise_var);
  }
  auto filter = [](const torch::Tensor& v, const torch::Tensor& w) {
    return torch::real(torch::fft::ifft2(torch::fft::fft2(v) * w)).to(v.scalar_type());
  };
  LangevinPreconditioner m;
  m.apply = [filter, weights](const torch::Tensor& v) { return filter(v, weights); };
  m.inverse = [filter, weights](const torch::Tensor& v) { return filter(v, 1 / weights); };
  m.noise = [filter, weights](torch::Generator& rng) {
    return filter(at::randn(weights.sizes(), rng, weights.options()), weights.sqrt());
  };
  return m;
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
