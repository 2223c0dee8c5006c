// Distances between two sets of features (rows), as FID and KID compute them
// from Inception pool features (metrics/perceptual.hpp). Float64 throughout.
#pragma once
#include <torch/types.h>

#include <cstdint>

namespace ud2m::metrics {

// Fréchet distance between Gaussians fitted to the two sets (means, unbiased
// covariances, as pytorch-fid's np.cov): |μa − μb|² + tr(Σa + Σb − 2 (Σa Σb)^½).
// tr((Σa Σb)^½) is computed exactly through a symmetric problem (see
// fid.cpp), so it stays finite and fast when the covariances are singular
// (fewer images than feature dimensions), where pytorch-fid's sqrtm fails.
// Needs at least 2 rows per set.
double frechet_distance(const torch::Tensor& a, const torch::Tensor& b);

struct KidOptions {
  int subsets = 100;        // torchmetrics' and clean-fid's defaults
  int subset_size = 1000;
  uint64_t seed = 0;        // subset draws
};

struct KidResult {
  double mean = 0, std = 0;  // over subsets (population std, as torchmetrics)
  int subsets = 0;           // 1 when both sets fit in one subset
  int64_t subset_size = 0;
};

// Kernel inception distance (Bińkowski et al. 2018): the unbiased MMD² with
// the polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over random
// subsets of m = min(na, nb, subset_size) rows of each set (as torchmetrics'
// poly_mmd). When both sets have exactly m rows every subset is the whole set,
// so it is evaluated once. Needs m ≥ 2.
KidResult kernel_inception_distance(const torch::Tensor& a, const torch::Tensor& b, const KidOptions& options = {});

}  // namespace ud2m::metrics
