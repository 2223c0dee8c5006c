#include "train/perceptual_loss.hpp"

#include "core/error.hpp"
#include "diffusion/prior.hpp"
#include "nets/lpips_net.hpp"

namespace ud2m::train {

namespace {
void freeze(torch::nn::Module& module) {
  for (auto& p : module.parameters()) p.set_requires_grad(false);
  module.eval();
}

torch::Tensor unit_channels(const torch::Tensor& f) {
  return f / (f.pow(2).sum(1, true).sqrt() + 1e-10);
}
}  // namespace

PerceptualLoss lpips_loss(const std::string& trunk, const std::string& heads, const torch::Device& device) {
  auto net = nets::load_lpips(trunk, heads);
  freeze(*net);
  net->to(device);
  auto name = std::string("LPIPS (") + nets::lpips_backbone_name(net->backbone()) + ")";
  // Both in model units [-1, 1], which is what LPIPS takes.
  return {name, [net](const torch::Tensor& a, const torch::Tensor& b) mutable { return net->forward(a, b).mean(); }};
}

PerceptualLoss prior_feature_loss(const std::string& prior_path, const torch::Device& device) {
  auto prior = diffusion::load_prior(prior_path);
  auto adm = std::dynamic_pointer_cast<diffusion::AdmPrior>(prior);
  UD2M_CHECK(adm, "the prior-feature perceptual loss needs an ADM prior, and '{}' is not one: give LPIPS weights "
             "(--lpips-weights) or --perceptual none", prior_path);
  freeze(*adm->net());
  adm->net()->to(device);
  return {"prior features", [adm](const torch::Tensor& a, const torch::Tensor& b) {
            auto t = torch::zeros({a.size(0)}, a.options().dtype(torch::kFloat32));
            auto fa = adm->net()->encoder_features(a, t);
            std::vector<torch::Tensor> fb;
            {
              torch::NoGradGuard no_grad;
              fb = adm->net()->encoder_features(b, t);
            }
            auto total = torch::zeros({}, a.options().dtype(torch::kFloat32));
            for (size_t i = 0; i < fa.size(); ++i)
              total = total + (unit_channels(fa[i].to(torch::kFloat32)) - unit_channels(fb[i].to(torch::kFloat32)))
                                  .pow(2).sum(1).mean();
            return total;
          }};
}

}  // namespace ud2m::train
