// A singular value decomposition A = U·diag(s)·V_Rᵀ of the operators that have
// a cheap one (DDRM works in its coordinates). V_R spans the row space of A;
// whatever V_R misses is the null space, x − V_R V_Rᵀ x.
//
// Coordinates are Fourier coefficients for the circular operators, so they
// may be complex (Hermitian-symmetric spectra of real images). Every update a
// sampler makes there has real, per-coordinate coefficients, and noise is
// drawn as vt(white pixel noise), so images stay real and noise has the
// right covariance without ever building a real basis.
#pragma once
#include <torch/types.h>

#include <memory>

#include "physics/operator.hpp"

namespace ud2m::physics {

class Svd {
 public:
  virtual ~Svd() = default;
  virtual torch::Tensor vt(const torch::Tensor& x) const = 0;  // image → row-space coordinates V_Rᵀx
  virtual torch::Tensor v(const torch::Tensor& c) const = 0;   // coordinates → image V_R c
  virtual torch::Tensor ut(const torch::Tensor& y) const = 0;  // measurement → coordinates Uᵀy
  // s ≥ 0, broadcastable against the coordinates; Uᵀ A x = s ⊙ V_Rᵀ x.
  virtual torch::Tensor singular_values(const torch::Tensor& like) const = 0;
};

// The decomposition of identity, inpainting, circular blur, circular SR and a
// user's matrix (up to 25 M entries); nullptr for an operator without one.
std::shared_ptr<const Svd> svd_of(const Operator& op);

}  // namespace ud2m::physics
