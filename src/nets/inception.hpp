// The Inception-v3 behind every published FID and KID: TensorFlow's
// 2015-12-05 graph as pytorch-fid ports it (its FIDInceptionA/C/E_1/E_2 blocks:
// average pools that ignore padding, a max pool in the last block), up to
// the 2048-d average-pooled features.
//
// Weights: pytorch-fid's release file pt_inception-2015-12-05-6726825d.pth
// (torchvision Inception3 names, 1008-class fc, which the features do not use).
#pragma once
#include <torch/torch.h>

#include <string>

namespace ud2m::nets {

class FidInceptionImpl : public torch::nn::Module {
 public:
  FidInceptionImpl();
  // (N, 2048) pool features of (N, 3, H, W) images in [0, 1]. As pytorch-fid
  // does, any size is resized bilinearly to 299×299 and mapped to [-1, 1].
  torch::Tensor forward(const torch::Tensor& images);

 private:
  // Conv2d_1a_3x3 ... Mixed_7c in order, registered under torchvision's names.
  std::vector<torch::nn::AnyModule> blocks_;
};
TORCH_MODULE(FidInception);

// Loads pytorch-fid's weights (throws Error naming the file and its first
// mismatching tensors). Eval mode, frozen weights.
FidInception load_fid_inception(const std::string& path);

}  // namespace ud2m::nets
