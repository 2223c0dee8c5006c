// Statistics of S posterior samples stacked along dimension 0 (S, ...): the
// pixelwise uncertainty and how well it is calibrated against the truth.
#pragma once
#include <torch/types.h>

namespace ud2m::metrics {

torch::Tensor posterior_mean(const torch::Tensor& samples);  // (...)

// Pixelwise sample standard deviation (S − 1 in the denominator, as torch.std
// and numpy's ddof=1), shape (...). Needs S ≥ 2.
torch::Tensor posterior_std(const torch::Tensor& samples);

// Empirical coverage of central credible intervals: the fraction of entries of
// `reference` (shape (...)) lying in [lower, upper], the (1 − q)/2 and
// (1 + q)/2 sample quantiles of the S samples at that entry, interpolated
// linearly between order statistics (numpy's and torch's default). A
// calibrated sampler gives ≈ q. Needs S ≥ 2 and 0 < q < 1.
double credible_coverage(const torch::Tensor& samples, const torch::Tensor& reference, double q);

// The linearly interpolated p-quantile over dimension 0 (sorting, so without
// torch::quantile's input-size limit).
torch::Tensor sample_quantile(const torch::Tensor& samples, double p);

}  // namespace ud2m::metrics
