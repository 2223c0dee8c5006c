#include "metrics/perceptual.hpp"

#include <torch/torch.h>

#include "core/error.hpp"

namespace ud2m::metrics {
namespace {

torch::Tensor as_rgb(const torch::Tensor& x) {
  UD2M_CHECK(x.dim() == 4 && (x.size(1) == 1 || x.size(1) == 3), "expected (N, 1 or 3, H, W) images, not {}",
             fmt::join(x.sizes(), "x"));
  return x.size(1) == 1 ? x.expand({-1, 3, -1, -1}) : x;
}

}  // namespace

torch::Tensor lpips_per_image(nets::LpipsNet& net, const torch::Tensor& estimate, const torch::Tensor& reference) {
  UD2M_CHECK(estimate.sizes() == reference.sizes(), "cannot compare images of sizes {} and {}",
             fmt::join(estimate.sizes(), "x"), fmt::join(reference.sizes(), "x"));
  torch::NoGradGuard no_grad;
  auto to_net = [](const torch::Tensor& x) { return as_rgb(x).to(torch::kFloat32) * 2 - 1; };
  return net->forward(to_net(estimate), to_net(reference)).to(torch::kFloat64);
}

torch::Tensor inception_features(nets::FidInception& net, const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  return net->forward(as_rgb(images).to(torch::kFloat32)).to(torch::kFloat64);
}

torch::Tensor prior_features(nets::AdmUNet& net, const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  UD2M_CHECK(images.dim() == 4 && images.size(1) == net->config().in_channels,
             "prior features: expected (N, {}, H, W) images, not {}", net->config().in_channels,
             fmt::join(images.sizes(), "x"));
  auto x = images.to(torch::kFloat32) * 2 - 1;  // model units
  std::vector<torch::Tensor> stats;
  for (auto& level : net->encoder_features(x, torch::zeros({x.size(0)}))) {
    auto flat = level.to(torch::kFloat32).flatten(2);
    stats.push_back(flat.mean(2));
    stats.push_back(flat.std(2, /*unbiased=*/false));
  }
  return torch::cat(stats, 1).to(torch::kFloat64);
}

}  // namespace ud2m::metrics
