#include "physics/downsampling.hpp"

#include <torch/torch.h>

#include "core/error.hpp"
#include "physics/fourier.hpp"
#include "physics/kernels.hpp"
#include "physics/serialize.hpp"

namespace ud2m::physics {

torch::Tensor sr_filter(const std::string& name, int64_t factor) {
  if (name == "bicubic") return bicubic_filter(factor);
  if (name == "gaussian") return downsampling_gaussian_filter(factor);
  if (name == "box") return box_kernel(factor);
  fail("unknown super-resolution filter '{}' (valid: bicubic, gaussian, box)", name);
}

Downsampling::Downsampling(torch::Tensor filter, int64_t factor, int64_t height, int64_t width)
    : filter_(filter.to(torch::kFloat32).contiguous()), factor_(factor), height_(height), width_(width) {
  UD2M_CHECK(factor >= 1, "the super-resolution factor must be at least 1, not {}", factor);
  UD2M_CHECK(height % factor == 0 && width % factor == 0,
             "the {}x{} image is not divisible by the super-resolution factor {}", height, width, factor);
  UD2M_CHECK(filter_.dim() == 2 && filter_.size(0) <= height && filter_.size(1) <= width,
             "the {}x{} anti-aliasing filter is larger than the {}x{} image", filter_.size(0), filter_.size(1),
             height, width);
  spectrum_ = kernel_spectrum(filter_, height, width, /*half=*/false);
  half_spectrum_ = kernel_spectrum(filter_, height, width, /*half=*/true);
  aliased_power_ = block_mean(spectrum_.abs().pow(2));
}

void Downsampling::check_input(const torch::Tensor& x) const {
  UD2M_CHECK(x.dim() == 4 && x.size(2) == height_ && x.size(3) == width_,
             "the super-resolution operator was built for {}x{} images, not input of shape {}", height_, width_,
             x.sizes().vec());
}

// Block (i, j) of an (H, W) array split into f×f blocks of (H/f, W/f); the mean
// over blocks is what decimation does to a spectrum.
torch::Tensor Downsampling::block_mean(const torch::Tensor& s) const {
  auto sizes = s.sizes().vec();
  sizes.pop_back(), sizes.pop_back();
  auto shape = sizes;
  for (int64_t v : {factor_, height_ / factor_, factor_, width_ / factor_}) shape.push_back(v);
  return s.reshape(shape).mean({-4, -2});
}

torch::Tensor Downsampling::tile(const torch::Tensor& s) const {
  std::vector<int64_t> reps(s.dim(), 1);
  reps[s.dim() - 2] = factor_, reps[s.dim() - 1] = factor_;
  return s.repeat(reps);
}

torch::Tensor Downsampling::forward(const torch::Tensor& x) const {
  check_input(x);
  auto blurred = torch::fft::irfft2(torch::fft::rfft2(x) * spectrum_like(half_spectrum_, x),
                                    std::vector<int64_t>{height_, width_});
  return blurred.slice(2, 0, height_, factor_).slice(3, 0, width_, factor_);
}

torch::Tensor Downsampling::adjoint_from_spectrum(const torch::Tensor& v) const {
  auto H = spectrum_like_complex(spectrum_, v);
  return torch::real(torch::fft::ifft2(H.conj() * tile(v)));
}

torch::Tensor Downsampling::adjoint(const torch::Tensor& y) const {
  // Zero insertion is a tiling of the spectrum: no need to build the sparse image.
  return adjoint_from_spectrum(torch::fft::fft2(y));
}

torch::Tensor Downsampling::pinv(const torch::Tensor& y) const {
  auto power = aliased_power_;
  auto inverse = torch::where(power > 1e-10, 1 / power.clamp_min(1e-300), torch::zeros_like(power));
  auto Y = torch::fft::fft2(y);
  return adjoint_from_spectrum(Y * inverse.to(y.device(), y.scalar_type()));
}

torch::Tensor Downsampling::prox(const torch::Tensor& z, const torch::Tensor& y, double gamma) const {
  UD2M_CHECK(gamma >= 0, "prox step gamma must be non-negative, not {}", gamma);
  check_input(z);
  if (gamma == 0) return z;
  // (AᵀA + I/γ)⁻¹ b with b = Aᵀy + z/γ, by Woodbury: γ(b − Aᵀ(AAᵀ + I/γ)⁻¹A b),
  // all in Fourier (F Aᵀy = H̄·tile(F y)), so only two full-size transforms.
  auto Hk = spectrum_like(spectrum_, z);
  auto Fb = Hk.conj() * tile(torch::fft::fft2(y)) + torch::fft::fft2(z) / gamma;
  auto solved = block_mean(Hk * Fb) / (aliased_power_.to(z.device(), z.scalar_type()) + 1 / gamma);
  return gamma * torch::real(torch::fft::ifft2(Fb - Hk.conj() * tile(solved)));
}

std::vector<int64_t> Downsampling::output_shape(const std::vector<int64_t>& s) const {
  return {s[0], s[1], s[2] / factor_, s[3] / factor_};
}

nlohmann::json Downsampling::to_json() const {
  return {{"type", name()}, {"factor", factor_}, {"height", height_}, {"width", width_},
          {"filter", tensor_to_json(filter_)}};
}

std::shared_ptr<Downsampling> Downsampling::from_json(const nlohmann::json& j) {
  return std::make_shared<Downsampling>(
      tensor_from_json(json_get<nlohmann::json>(j, "filter", "downsampling"), "downsampling filter"),
      json_get<int64_t>(j, "factor", "downsampling"), json_get<int64_t>(j, "height", "downsampling"),
      json_get<int64_t>(j, "width", "downsampling"));
}

}  // namespace ud2m::physics
