// Total-variation regularised restoration: the non-learned baseline,
//   x̂ = argmin_x ½‖A(x) − y‖² + λ·TV(x),
// with colour (channel-coupled) isotropic TV. Linear operators use ADMM with
// the operator's own prox; nonlinear ones use proximal gradient steps.
#pragma once
#include <torch/types.h>

#include <functional>

#include "physics/operator.hpp"

namespace ud2m::variational {

// Isotropic TV with forward differences and Neumann boundary, summed over pixels;
// the gradient magnitude couples the channels.
torch::Tensor total_variation(const torch::Tensor& x);

// prox_{λ·TV}(v) = argmin_x ½‖x − v‖² + λ·TV(x), by Chambolle's dual projection.
torch::Tensor tv_prox(const torch::Tensor& v, double lambda, int iterations = 50);

struct TvOptions {
  double weight = 0.0;    // λ in model units; 0 picks default_tv_weight(σ)
  int iterations = 100;   // outer ADMM / proximal-gradient iterations
  int inner = 20;         // dual iterations of each TV prox
  double step = 0.05;      // gradient step for nonlinear operators
};

// A λ that works across the built-in tasks at measurement noise σ ([0, 1] units).
double default_tv_weight(double sigma);

using StepCallback = std::function<void(int step, const torch::Tensor& x)>;

// image_shape: (N, C, H, W) of the unknown image.
torch::Tensor tv_restore(const physics::Operator& op, const torch::Tensor& y, const std::vector<int64_t>& image_shape,
                         const TvOptions& options, const StepCallback& on_step = {});

}  // namespace ud2m::variational
