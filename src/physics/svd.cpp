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

// A user's matrix: its thin SVD A = U·diag(s)·Vᵀ, computed once (in float64).
// Coordinates are (N, C', 1, K), laid out as the operator's measurements.
class MatrixSvd : public Svd {
 public:
  explicit MatrixSvd(const MatrixOperator& op) : image_shape_(op.image_shape()), per_channel_(op.per_channel()) {
    const auto dense = op.matrix().is_sparse() ? op.matrix().to_dense() : op.matrix();
    auto [u, s, vh] = torch::linalg_svd(dense.to(torch::kFloat64), /*full_matrices=*/false);
    u_ = u.to(torch::kFloat32);
    s_ = s.to(torch::kFloat32);
    v_ = vh.t().contiguous().to(torch::kFloat32);
  }
  torch::Tensor vt(const torch::Tensor& x) const override {
    const int64_t rows = x.size(0) * (per_channel_ ? x.size(1) : 1);
    return as_coordinates(torch::mm(x.reshape({rows, v_.size(0)}), v_.to(x.scalar_type())), x.size(0));
  }
  torch::Tensor v(const torch::Tensor& c) const override {
    auto flat = torch::mm(c.reshape({-1, v_.size(1)}), v_.t().to(c.scalar_type()));
    return flat.reshape({c.size(0), image_shape_[0], image_shape_[1], image_shape_[2]});
  }
  torch::Tensor ut(const torch::Tensor& y) const override {
    return as_coordinates(torch::mm(y.reshape({-1, u_.size(0)}), u_.to(y.scalar_type())), y.size(0));
  }
  torch::Tensor singular_values(const torch::Tensor& like) const override { return real_like(s_, like); }

  // Dense decompositions of matrices up to this many entries (a 2,500 x 4,096 one takes seconds).
  static constexpr int64_t kMaxEntries = 25'000'000;

 private:
  static torch::Tensor as_coordinates(const torch::Tensor& rows, int64_t batch) {
    return rows.reshape({batch, -1, 1, rows.size(1)});
  }
  std::vector<int64_t> image_shape_;
  bool per_channel_;
  torch::Tensor u_, s_, v_;  // (M, K), (K), (N, K)
};

}  // namespace

std::shared_ptr<const Svd> svd_of(const Operator& op) {
  if (dynamic_cast<const Identity*>(&op)) return std::make_shared<IdentitySvd>();
  if (auto* inpainting = dynamic_cast<const Inpainting*>(&op)) return std::make_shared<InpaintingSvd>(inpainting->mask());
  if (auto* blur = dynamic_cast<const CircularBlur*>(&op)) return std::make_shared<CircularBlurSvd>(*blur);
  if (auto* sr = dynamic_cast<const Downsampling*>(&op)) return std::make_shared<DownsamplingSvd>(*sr);
  if (auto* matrix = dynamic_cast<const MatrixOperator*>(&op); matrix && matrix->matrix().numel() <= MatrixSvd::kMaxEntries)
    return std::make_shared<MatrixSvd>(*matrix);
  return nullptr;
}

}  // namespace ud2m::physics
