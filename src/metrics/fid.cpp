#include "metrics/fid.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace ud2m::metrics {
namespace {

void check_features(const torch::Tensor& a, const torch::Tensor& b, const char* metric) {
  UD2M_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(1),
             "{} compares two (n, d) feature sets of one width, not {} and {}", metric, fmt::join(a.sizes(), "x"),
             fmt::join(b.sizes(), "x"));
  UD2M_CHECK(a.size(0) >= 2 && b.size(0) >= 2, "{} needs at least 2 images per set, not {} and {}", metric,
             a.size(0), b.size(0));
}

// tr((Σa Σb)^½) for Σa = AᵀA and Σb = BᵀB, A and B the centred features
// scaled by 1/√(n − 1). Two exact routes, picked by cost:
// - fewer images than dimensions (the usual case for restoration test sets):
//   the non-zero eigenvalues of Σa Σb are those of (ABᵀ)(ABᵀ)ᵀ, so the trace is
//   the nuclear norm of the small na×nb matrix ABᵀ;
// - otherwise: the eigenvalues of the symmetric Σa^½ Σb Σa^½ (same spectrum
//   as Σa Σb), from two d×d symmetric eigen-decompositions.
// Both stay finite for singular covariances, where pytorch-fid's sqrtm fails.
double trace_sqrt_product(const torch::Tensor& a, const torch::Tensor& b) {
  if (std::max(a.size(0), b.size(0)) <= a.size(1)) return torch::linalg_svdvals(a.mm(b.t())).sum().item<double>();
  auto sa = a.t().mm(a), sb = b.t().mm(b);
  auto [values, vectors] = torch::linalg_eigh(sa);
  // Rounding can make eigenvalues of a PSD matrix slightly negative; they are 0.
  auto root = (vectors * values.clamp_min(0).sqrt()).mm(vectors.t());
  auto m = root.mm(sb).mm(root);
  return torch::linalg_eigvalsh((m + m.t()) / 2).clamp_min(0).sqrt().sum().item<double>();
}

// Rows centred and scaled so that xᵀx is the unbiased covariance.
torch::Tensor scaled_deviations(const torch::Tensor& x) {
  return (x - x.mean(0, true)) / std::sqrt(static_cast<double>(x.size(0) - 1));
}

// The unbiased MMD² estimate with the cubic polynomial kernel (torchmetrics' poly_mmd).
double poly_mmd(const torch::Tensor& x, const torch::Tensor& y) {
  const double d = static_cast<double>(x.size(1));
  const double m = static_cast<double>(x.size(0));
  auto kernel = [d](const torch::Tensor& p, const torch::Tensor& q) { return (p.mm(q.t()) / d + 1).pow(3); };
  auto kxx = kernel(x, x), kyy = kernel(y, y), kxy = kernel(x, y);
  auto off_diagonal = [](const torch::Tensor& k) { return k.sum() - k.diagonal().sum(); };
  auto value = (off_diagonal(kxx) + off_diagonal(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / (m * m);
  return value.item<double>();
}

}  // namespace

double frechet_distance(const torch::Tensor& a_in, const torch::Tensor& b_in) {
  check_features(a_in, b_in, "FID");
  torch::NoGradGuard no_grad;
  auto a = a_in.to(torch::kFloat64), b = b_in.to(torch::kFloat64);
  auto da = scaled_deviations(a), db = scaled_deviations(b);
  const double mean_term = (a.mean(0) - b.mean(0)).pow(2).sum().item<double>();
  const double traces = (da.pow(2).sum() + db.pow(2).sum()).item<double>();  // tr Σa + tr Σb
  return mean_term + traces - 2 * trace_sqrt_product(da, db);
}

KidResult kernel_inception_distance(const torch::Tensor& a_in, const torch::Tensor& b_in, const KidOptions& options) {
  check_features(a_in, b_in, "KID");
  UD2M_CHECK(options.subsets > 0 && options.subset_size >= 2, "KID needs subsets > 0 and a subset size >= 2, not {} and {}",
             options.subsets, options.subset_size);
  torch::NoGradGuard no_grad;
  auto a = a_in.to(torch::kFloat64), b = b_in.to(torch::kFloat64);
  const int64_t m = std::min({a.size(0), b.size(0), static_cast<int64_t>(options.subset_size)});
  KidResult r;
  r.subset_size = m;
  if (a.size(0) == m && b.size(0) == m) {
    r.mean = poly_mmd(a, b);
    r.subsets = 1;
    return r;
  }
  auto rng = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  std::vector<double> values;
  for (int s = 0; s < options.subsets; ++s) {
    auto pick = [&](const torch::Tensor& x) {
      return x.index_select(0, torch::randperm(x.size(0), rng, torch::kLong).narrow(0, 0, m).to(x.device()));
    };
    auto x = pick(a);
    values.push_back(poly_mmd(x, pick(b)));
  }
  auto t = torch::tensor(values, torch::kFloat64);
  r.mean = t.mean().item<double>();
  r.std = t.std(/*unbiased=*/false).item<double>();
  r.subsets = options.subsets;
  return r;
}

}  // namespace ud2m::metrics
