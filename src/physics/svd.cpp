#include "physics/svd.hpp"

#include <torch/torch.h>

#include "physics/blur.hpp"
#include "physics/downsampling.hpp"
#include "physics/fourier.hpp"
#include "physics/identity.hpp"
#include "physics/inpainting.hpp"
#include "physics/matrix.hpp"

namespace ud2m::physics {
namespace {

// Singular values in the real precision of the coordinates they scale.
torch::Tensor real_like(const torch::Tensor& values, const torch::Tensor& like) {
  return values.to(like.device(), c10::toRealValueType(like.scalar_type()));
}

class IdentitySvd : public Svd {
 public:
  torch::Tensor vt(const torch::Tensor& x) const override { return x; }
  torch::Tensor v(const torch::Tensor& c) const override { return c; }
  torch::Tensor ut(const torch::Tensor& y) const override { return y; }
  torch::Tensor singular_values(const torch::Tensor& like) const override {
    return real_like(torch::ones({1}), like);
  }
};

// Pixels are the coordinates; missing ones have s = 0.
class InpaintingSvd : public IdentitySvd {
 public:
  explicit InpaintingSvd(torch::Tensor mask) : mask_(std::move(mask)) {}
  torch::Tensor singular_values(const torch::Tensor& like) const override {
    return real_like(mask_, like);
  }

 private:
  torch::Tensor mask_;
};

// Orthonormal real FFT: A = F⁻¹ diag(K) F = F⁻¹ diag(e^{iφ}) · diag(|K|) · F, so
// Vᵀ = F, Uᵀ = diag(e^{−iφ}) F and s = |K|.
class CircularBlurSvd : public Svd {
 public:
  explicit CircularBlurSvd(const CircularBlur& blur)
      : spectrum_(blur.half_spectrum()), height_(blur.height()), width_(blur.width()) {}
  torch::Tensor vt(const torch::Tensor& x) const override { return torch::fft::rfft2(x, std::nullopt, {-2, -1}, "ortho"); }
  torch::Tensor v(const torch::Tensor& c) const override {
    return torch::fft::irfft2(c, std::vector<int64_t>{height_, width_}, {-2, -1}, "ortho");
  }
  torch::Tensor ut(const torch::Tensor& y) const override {
    auto phase = spectrum_ / spectrum_.abs().clamp_min(1e-300);
    return vt(y) * spectrum_like(phase.conj(), y);
  }
  torch::Tensor singular_values(const torch::Tensor& like) const override {
    return real_like(spectrum_.abs(), like);
  }

 private:
  torch::Tensor spectrum_;  // (H, W/2+1) complex128
  int64_t height_, width_;
};

// y = decimate(h ∗ x): AAᵀ is diagonal in the low-resolution Fourier basis U
// with eigenvalues s², so Vᵀx = s⁻¹ Uᵀ A x and V c = Aᵀ U (c / s).
class DownsamplingSvd : public Svd {
 public:
  explicit DownsamplingSvd(const Downsampling& sr) : sr_(sr), s_(sr.aat_eigenvalues().sqrt()) {}
  torch::Tensor vt(const torch::Tensor& x) const override { return divide_by_s(ut(sr_.forward(x))); }
  torch::Tensor v(const torch::Tensor& c) const override {
    return sr_.adjoint(torch::real(torch::fft::ifft2(divide_by_s(c), std::nullopt, {-2, -1}, "ortho")));
  }
  torch::Tensor ut(const torch::Tensor& y) const override { return torch::fft::fft2(y, std::nullopt, {-2, -1}, "ortho"); }
  torch::Tensor singular_values(const torch::Tensor& like) const override {
    return real_like(s_, like);
  }

 private:
  torch::Tensor divide_by_s(const torch::Tensor& c) const {
    auto s = real_like(s_, c);
    return torch::where(s > CircularBlur::kPinvTolerance, c / s.clamp_min(1e-30), torch::zeros_like(c));
  }
  Downsampling sr_;  // a copy: the decomposition may outlive the operator it came from
  torch::Tensor s_;  // (H/f, W/f) float64
};

// A user's matrix through its decomposition (MatrixOperator::decomposition),
// its tensors shared. Coordinates are (N, C', 1, K), as the measurements.
class MatrixSvd : public Svd {
 public:
  MatrixSvd(const MatrixDecomposition& d, std::vector<int64_t> image_shape) : d_(d), image_shape_(std::move(image_shape)) {}
  torch::Tensor vt(const torch::Tensor& x) const override {
    return coordinates(torch::mm(x.reshape({-1, d_.v.size(0)}), d_.v.to(x.scalar_type())), x.size(0));
  }
  torch::Tensor v(const torch::Tensor& c) const override {
    auto rows = torch::mm(c.reshape({-1, d_.v.size(1)}), d_.v.t().to(c.scalar_type()));
    return rows.reshape({c.size(0), image_shape_[0], image_shape_[1], image_shape_[2]});
  }
  torch::Tensor ut(const torch::Tensor& y) const override {
    return coordinates(torch::mm(y.reshape({-1, d_.u.size(0)}), d_.u.to(y.scalar_type())), y.size(0));
  }
  torch::Tensor singular_values(const torch::Tensor& like) const override { return real_like(d_.s, like); }

 private:
  static torch::Tensor coordinates(const torch::Tensor& rows, int64_t batch) {
    return rows.reshape({batch, -1, 1, rows.size(1)});
  }
  MatrixDecomposition d_;
  std::vector<int64_t> image_shape_;
};

}  // namespace

std::shared_ptr<const Svd> svd_of(const Operator& op) {
  if (dynamic_cast<const Identity*>(&op)) return std::make_shared<IdentitySvd>();
  if (auto* inpainting = dynamic_cast<const Inpainting*>(&op)) return std::make_shared<InpaintingSvd>(inpainting->mask());
  if (auto* blur = dynamic_cast<const CircularBlur*>(&op)) return std::make_shared<CircularBlurSvd>(*blur);
  if (auto* sr = dynamic_cast<const Downsampling*>(&op)) return std::make_shared<DownsamplingSvd>(*sr);
  if (auto* matrix = dynamic_cast<const MatrixOperator*>(&op); matrix && matrix->decomposition())
    return std::make_shared<MatrixSvd>(*matrix->decomposition(), matrix->image_shape());
  return nullptr;
}

}  // namespace ud2m::physics
