// The perceptual term of UD2M's generator loss: LPIPS when the user has its
// weights, otherwise a documented fallback that needs no downloads — the
// distance between the frozen prior's own encoder features.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>

namespace ud2m::train {

struct PerceptualLoss {
  std::string name;  // how the term is computed, for logs and adapter metadata
  std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)> distance;  // (x̂0, x), model units

  explicit operator bool() const { return static_cast<bool>(distance); }
  torch::Tensor operator()(const torch::Tensor& estimate, const torch::Tensor& target) const {
    return distance(estimate, target);
  }
};

// LPIPS v0.1 from a torchvision trunk file and the lpips heads file, on `device`.
PerceptualLoss lpips_loss(const std::string& trunk, const std::string& heads, const torch::Device& device = torch::kCPU);

// Σ over the encoder levels of the prior (an ADM model, loaded afresh so its
// weights stay frozen whatever adapter is trained) of the mean squared
// distance between channel-normalised features, as LPIPS does with unit
// weights; the network sees both images as clean inputs (t = 0).
PerceptualLoss prior_feature_loss(const std::string& prior_path, const torch::Device& device = torch::kCPU);

}  // namespace ud2m::train
