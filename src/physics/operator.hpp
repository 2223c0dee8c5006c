// The forward-model interface every sampler shares (deepinv's `physics` idea):
// y = A(x) + n. Tensors are NCHW float32 in model units ([-1, 1] images).
#pragma once
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ud2m::physics {

// Measurement noise. sigma is in [0, 1] image units, as papers report it;
// model_sigma() is the one place it is converted to [-1, 1] units.
struct GaussianNoise {
  double sigma = 0.0;
  double model_sigma() const { return 2.0 * sigma; }
  torch::Tensor add(const torch::Tensor& y, torch::Generator& rng) const;
};

// A symmetric positive-definite M ≈ (I/s² + JᵀJ/σ²)⁻¹ at some point, for
// preconditioned Langevin steps on ‖x − x0‖²/(2s²) + ‖A(x) − y‖²/(2σ²):
// M, M⁻¹ (for the Metropolis correction) and draws of N(0, M).
struct LangevinPreconditioner {
  std::function<torch::Tensor(const torch::Tensor&)> apply;    // v -> M v
  std::function<torch::Tensor(const torch::Tensor&)> inverse;  // v -> M⁻¹ v
  std::function<torch::Tensor(torch::Generator&)> noise;       // a draw of N(0, M)
};

class Operator {
 public:
  virtual ~Operator() = default;

  // A(x), differentiable with respect to x.
  virtual torch::Tensor forward(const torch::Tensor& x) const = 0;
  // What a real device records before noise (JPEG: the libjpeg codec);
  // forward() is the differentiable model of it.
  virtual torch::Tensor measure(const torch::Tensor& x) const { return forward(x); }
  // Gradient with respect to x of ½‖A(x) − y‖² (autograd unless overridden).
  virtual torch::Tensor data_grad(const torch::Tensor& x, const torch::Tensor& y) const;
  virtual bool is_linear() const { return false; }
  // An upper bound on the spectral norm of forward()'s Jacobian (through its
  // straight-through rounding, if any), which sizes gradient steps on the
  // likelihood; 0 where none is known.
  virtual double jacobian_bound() const { return 0; }
  // Operators whose Gauss–Newton curvature JᵀJ is (nearly) diagonal in a
  // known basis offer a preconditioner at x for prior variance s² and noise
  // variance σ² (phase retrieval: the Fourier basis of the padded image);
  // without one, Langevin steps are sized by the stiffest direction.
  virtual std::optional<LangevinPreconditioner> langevin_preconditioner(const torch::Tensor& /*x*/,
                                                                        double /*prior_var*/,
                                                                        double /*noise_var*/) const {
    return std::nullopt;
  }
  // Shape of A(x) for an input of shape (N, C, H, W).
  virtual std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const;
  // Everything needed to rebuild this exact operator (kernel values, mask bits,
  // seed, sizes); operator_from_json() inverts it.
  virtual nlohmann::json to_json() const = 0;
  virtual std::string name() const = 0;
};

class LinearOperator : public Operator {
 public:
  bool is_linear() const override { return true; }
  torch::Tensor data_grad(const torch::Tensor& x, const torch::Tensor& y) const override;

  virtual torch::Tensor adjoint(const torch::Tensor& y) const = 0;
  // Minimum-norm least-squares solution A†y (CG on the normal equations unless
  // a closed form is known).
  virtual torch::Tensor pinv(const torch::Tensor& y) const;
  // argmin_x ½γ‖Ax − y‖² + ½‖x − z‖² = (γAᵀA + I)⁻¹(γAᵀy + z); closed form
  // where one exists, conjugate gradients otherwise. gamma may be a scalar or
  // broadcast per batch element.
  virtual torch::Tensor prox(const torch::Tensor& z, const torch::Tensor& y, double gamma) const;
  // AᵀA x (used by CG).
  virtual torch::Tensor normal(const torch::Tensor& x) const { return adjoint(forward(x)); }
  virtual bool has_closed_form_prox() const { return false; }
};

using OperatorPtr = std::shared_ptr<const Operator>;
using LinearOperatorPtr = std::shared_ptr<const LinearOperator>;

// Solves (αI + β·AᵀA) x = b by conjugate gradients, batched over dim 0.
torch::Tensor conjugate_gradient(const LinearOperator& op, const torch::Tensor& b, double alpha, double beta,
                                 const torch::Tensor& x0, int max_iter = 200, double tol = 1e-7);

}  // namespace ud2m::physics
