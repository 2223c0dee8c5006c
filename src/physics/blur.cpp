#include "physics/blur.hpp"

#include <torch/torch.h>

#include "core/error.hpp"
#include "physics/fourier.hpp"
#include "physics/serialize.hpp"

namespace ud2m::physics {

namespace {
void check_kernel_fits(const torch::Tensor& kernel, int64_t H, int64_t W) {
  UD2M_CHECK(kernel.dim() == 2, "a blur kernel must be 2-D, not of shape {}", kernel.sizes().vec());
  UD2M_CHECK(kernel.size(0) <= H && kernel.size(1) <= W, "the {}x{} blur kernel is larger than the {}x{} image",
             kernel.size(0), kernel.size(1), H, W);
}
}  // namespace

// ---- circular -------------------------------------------------------------

CircularBlur::CircularBlur(torch::Tensor kernel, int64_t height, int64_t width)
    : kernel_(kernel.to(torch::kFloat32).contiguous()), height_(height), width_(width) {
  check_kernel_fits(kernel_, height, width);
  spectrum_ = kernel_spectrum(kernel_, height, width, /*half=*/true);
}

void CircularBlur::check_input(const torch::Tensor& x) const {
  UD2M_CHECK(x.dim() == 4 && x.size(2) == height_ && x.size(3) == width_,
             "the circular blur was built for {}x{} images, not input of shape {}", height_, width_,
             x.sizes().vec());
}

// Real FFT throughout: x, y and the kernel are real, so the half spectrum holds everything.
torch::Tensor CircularBlur::apply(const torch::Tensor& x, const torch::Tensor& multiplier64) const {
  check_input(x);
  auto X = torch::fft::rfft2(x);
  return torch::fft::irfft2(X * spectrum_like(multiplier64, x), std::vector<int64_t>{height_, width_});
}

torch::Tensor CircularBlur::forward(const torch::Tensor& x) const { return apply(x, spectrum_); }

torch::Tensor CircularBlur::adjoint(const torch::Tensor& y) const { return apply(y, spectrum_.conj()); }

torch::Tensor CircularBlur::pinv(const torch::Tensor& y) const {
  auto mag = spectrum_.abs();
  auto inverse = torch::where(mag > kPinvTolerance, spectrum_.conj() / mag.pow(2).clamp_min(1e-300),
                              torch::zeros_like(spectrum_));
  return apply(y, inverse);
}

torch::Tensor CircularBlur::prox(const torch::Tensor& z, const torch::Tensor& y, double gamma) const {
  UD2M_CHECK(gamma >= 0, "prox step gamma must be non-negative, not {}", gamma);
  check_input(z);
  check_input(y);
  // Per-frequency weights on the small half spectrum first, so the full-size
  // work is two products and a sum: X = γK̄/(γ|K|²+1)·Y + 1/(γ|K|²+1)·Z.
  auto inv_den = 1 / (gamma * spectrum_.abs().pow(2) + 1);
  auto y_weight = spectrum_like(gamma * spectrum_.conj() * inv_den, z);
  auto z_weight = inv_den.to(z.device(), z.scalar_type());
  auto X = y_weight * torch::fft::rfft2(y) + z_weight * torch::fft::rfft2(z);
  return torch::fft::irfft2(X, std::vector<int64_t>{height_, width_});
}

nlohmann::json CircularBlur::to_json() const {
  return {{"type", name()}, {"height", height_}, {"width", width_}, {"kernel", tensor_to_json(kernel_)}};
}

std::shared_ptr<CircularBlur> CircularBlur::from_json(const nlohmann::json& j) {
  return std::make_shared<CircularBlur>(tensor_from_json(json_get<nlohmann::json>(j, "kernel", "circular_blur"),
                                                         "circular_blur kernel"),
                                        json_get<int64_t>(j, "height", "circular_blur"),
                                        json_get<int64_t>(j, "width", "circular_blur"));
}

// ---- reflect / valid ---------------------------------------------------------

torch::Tensor conv_valid(const torch::Tensor& x, const torch::Tensor& kernel) {
  const auto N = x.size(0), C = x.size(1);
  // conv2d is a correlation: flipping the kernel makes it a true convolution.
  auto weight = kernel.flip({0, 1}).to(x.device(), x.scalar_type()).view({1, 1, kernel.size(0), kernel.size(1)});
  auto out = torch::conv2d(x.reshape({N * C, 1, x.size(2), x.size(3)}), weight);
  return out.view({N, C, out.size(2), out.size(3)});
}

std::string boundary_name(ConvBlur::Boundary b) { return b == ConvBlur::Boundary::reflect ? "reflect" : "valid"; }

ConvBlur::Boundary parse_boundary(const std::string& name) {
  if (name == "reflect") return ConvBlur::Boundary::reflect;
  if (name == "valid") return ConvBlur::Boundary::valid;
  fail("unknown blur boundary '{}' (valid: circular, reflect, valid)", name);
}

ConvBlur::ConvBlur(torch::Tensor kernel, Boundary boundary, int64_t height, int64_t width)
    : kernel_(kernel.to(torch::kFloat32).contiguous()), boundary_(boundary), height_(height), width_(width) {
  check_kernel_fits(kernel_, height, width);
  // Reflection can mirror at most size − 1 pixels.
  if (boundary == Boundary::reflect)
    UD2M_CHECK(kernel_.size(0) / 2 < height && kernel_.size(1) / 2 < width,
               "the {}x{} kernel is too large to reflect-pad a {}x{} image", kernel_.size(0), kernel_.size(1),
               height, width);
}

namespace {
// deepinv's padding: centre at h/2, so even kernels pad one less before than after.
struct Pads {
  int64_t top, bottom, left, right;
};
Pads same_size_pads(const torch::Tensor& kernel) {
  const int64_t h = kernel.size(0), w = kernel.size(1);
  return {h / 2 - (h - 1) % 2, h / 2, w / 2 - (w - 1) % 2, w / 2};
}

// Adjoint of reflect padding along one dimension (before/after pixels added):
// every mirrored pixel sends its value back to the pixel it copied.
torch::Tensor reflect_pad_adjoint_1d(const torch::Tensor& p, int64_t dim, int64_t before, int64_t after) {
  const int64_t n = p.size(dim) - before - after;
  auto out = p.narrow(dim, before, n).clone();
  auto index = torch::TensorOptions().dtype(torch::kLong).device(p.device());
  if (before > 0)  // padded[j] = x[before − j], j < before
    out.index_add_(dim, torch::arange(before, 0, -1, index), p.narrow(dim, 0, before));
  if (after > 0)  // padded[before + n + k] = x[n − 2 − k]
    out.index_add_(dim, torch::arange(n - 2, n - 2 - after, -1, index), p.narrow(dim, before + n, after));
  return out;
}

torch::Tensor conv_valid_adjoint(const torch::Tensor& y, const torch::Tensor& kernel) {
  const auto N = y.size(0), C = y.size(1);
  auto weight = kernel.flip({0, 1}).to(y.device(), y.scalar_type()).view({1, 1, kernel.size(0), kernel.size(1)});
  auto out = torch::conv_transpose2d(y.reshape({N * C, 1, y.size(2), y.size(3)}), weight);
  return out.view({N, C, out.size(2), out.size(3)});
}
}  // namespace

torch::Tensor ConvBlur::forward(const torch::Tensor& x) const {
  UD2M_CHECK(x.dim() == 4 && x.size(2) == height_ && x.size(3) == width_,
             "the blur was built for {}x{} images, not input of shape {}", height_, width_, x.sizes().vec());
  if (boundary_ == Boundary::valid) return conv_valid(x, kernel_);
  const auto p = same_size_pads(kernel_);
  auto padded = torch::nn::functional::pad(
      x, torch::nn::functional::PadFuncOptions({p.left, p.right, p.top, p.bottom}).mode(torch::kReflect));
  return conv_valid(padded, kernel_);
}

// Explicit transpose (no autograd), so it also works under InferenceMode.
torch::Tensor ConvBlur::adjoint(const torch::Tensor& y) const {
  const auto expected = output_shape({y.size(0), y.size(1), height_, width_});
  UD2M_CHECK(y.dim() == 4 && y.sizes().vec() == expected, "the blur adjoint expects input of shape {}, not {}",
             expected, y.sizes().vec());
  auto full = conv_valid_adjoint(y, kernel_);
  if (boundary_ == Boundary::valid) return full;
  const auto p = same_size_pads(kernel_);
  return reflect_pad_adjoint_1d(reflect_pad_adjoint_1d(full, 2, p.top, p.bottom), 3, p.left, p.right);
}

std::vector<int64_t> ConvBlur::output_shape(const std::vector<int64_t>& s) const {
  if (boundary_ == Boundary::reflect) return s;
  return {s[0], s[1], s[2] - kernel_.size(0) + 1, s[3] - kernel_.size(1) + 1};
}

nlohmann::json ConvBlur::to_json() const {
  return {{"type", name()},
          {"boundary", boundary_name(boundary_)},
          {"height", height_},
          {"width", width_},
          {"kernel", tensor_to_json(kernel_)}};
}

std::shared_ptr<ConvBlur> ConvBlur::from_json(const nlohmann::json& j) {
  return std::make_shared<ConvBlur>(
      tensor_from_json(json_get<nlohmann::json>(j, "kernel", "conv_blur"), "conv_blur kernel"),
      parse_boundary(json_get<std::string>(j, "boundary", "conv_blur")), json_get<int64_t>(j, "height", "conv_blur"),
      json_get<int64_t>(j, "width", "conv_blur"));
}

}  // namespace ud2m::physics
