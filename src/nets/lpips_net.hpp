// LPIPS (Zhang et al. 2018), exactly as the `lpips` package v0.1 computes it:
// inputs in [-1, 1] are shifted and scaled per channel, passed through a
// torchvision ImageNet trunk (AlexNet, VGG-16 or SqueezeNet 1.1), each tapped
// feature map is unit-normalised over channels, the squared differences are
// weighted by a learned 1×1 convolution ("linear head"), averaged over space
// and summed over taps.
//
// Weights come from two user files, kept in their published layouts:
// - the trunk: torchvision's model-zoo state dict (alexnet-owt-7be5be79.pth,
//   vgg16-397923af.pth, squeezenet1_1-b8a52dc0.pth); only `features.*` is used;
// - the heads: the lpips package's lpips/weights/v0.1/{alex,vgg,squeeze}.pth
//   (tensors lin<k>.model.1.weight).
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "io/safetensors.hpp"

namespace ud2m::nets {

enum class LpipsBackbone { Alex, Vgg, Squeeze };

const char* lpips_backbone_name(LpipsBackbone backbone);  // "alex", "vgg", "squeeze" (the lpips names)

// Which trunk a torchvision state dict holds (told by its tensors); throws
// Error naming `source` when it is none of the three.
LpipsBackbone detect_lpips_backbone(const TensorMap& weights, const std::string& source);

// torchvision's `features` Sequential with its original indices, so tensor
// names match the model-zoo files ("features.3.weight").
class LpipsTrunkImpl : public torch::nn::Module {
 public:
  explicit LpipsTrunkImpl(LpipsBackbone backbone);
  std::vector<torch::Tensor> forward(torch::Tensor x);  // the tapped feature maps
  const std::vector<int64_t>& channels() const { return channels_; }

 private:
  torch::nn::Sequential features_;
  std::vector<size_t> tap_after_;  // layer indices whose outputs are tapped
  std::vector<int64_t> channels_;
};
TORCH_MODULE(LpipsTrunk);

// The linear heads, named as in the lpips package ("lin0.model.1.weight").
class LpipsHeadsImpl : public torch::nn::Module {
 public:
  explicit LpipsHeadsImpl(const std::vector<int64_t>& channels);
  // Weighted, spatially averaged squared difference of tap k: (N, 1).
  torch::Tensor forward(size_t k, const torch::Tensor& squared_difference);
  size_t size() const { return heads_.size(); }

 private:
  std::vector<torch::nn::Conv2d> heads_;
};
TORCH_MODULE(LpipsHeads);

class LpipsNetImpl : public torch::nn::Module {
 public:
  explicit LpipsNetImpl(LpipsBackbone backbone);
  // Distance per image, (N), between x and y of equal shape (N, 3, H, W) in
  // [-1, 1]. Differentiable with respect to the inputs.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& y);

  LpipsBackbone backbone() const { return backbone_; }
  LpipsTrunk trunk{nullptr};
  LpipsHeads heads{nullptr};

 private:
  LpipsBackbone backbone_;
  torch::Tensor shift_, scale_;
};
TORCH_MODULE(LpipsNet);

// Builds the network for the trunk in `backbone_file` and loads both files
// (throws Error naming the file and its first mismatching tensors). The
// result is in eval mode with frozen weights.
LpipsNet load_lpips(const std::string& backbone_file, const std::string& heads_file);

}  // namespace ud2m::nets
