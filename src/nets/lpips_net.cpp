#include "nets/lpips_net.hpp"

#include "core/error.hpp"
#include "io/checkpoint.hpp"
#include "nets/state_dict.hpp"

namespace ud2m::nets {
namespace {

namespace nn = torch::nn;

nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding));
}

nn::MaxPool2d max_pool(bool ceil_mode = false) {
  return nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).ceil_mode(ceil_mode));
}

// SqueezeNet's Fire module: 1×1 squeeze, then 1×1 and 3×3 expands side by side.
class FireImpl : public nn::Module {
 public:
  FireImpl(int64_t in, int64_t squeeze_channels, int64_t expand_channels)
      : squeeze_(register_module("squeeze", conv(in, squeeze_channels, 1))),
        expand1x1_(register_module("expand1x1", conv(squeeze_channels, expand_channels, 1))),
        expand3x3_(register_module("expand3x3", conv(squeeze_channels, expand_channels, 3, 1, 1))) {}

  torch::Tensor forward(const torch::Tensor& x) {
    auto s = torch::relu(squeeze_(x));
    return torch::cat({torch::relu(expand1x1_(s)), torch::relu(expand3x3_(s))}, 1);
  }

 private:
  nn::Conv2d squeeze_, expand1x1_, expand3x3_;
};
TORCH_MODULE(Fire);

// torchvision's `features` up to the last layer LPIPS taps. Index positions
// matter (they name the tensors); ReLU and pooling hold none.
nn::Sequential alexnet_features() {
  return nn::Sequential(conv(3, 64, 11, 4, 2), nn::ReLU(), max_pool(),      // 0-2
                        conv(64, 192, 5, 1, 2), nn::ReLU(), max_pool(),     // 3-5
                        conv(192, 384, 3, 1, 1), nn::ReLU(),                // 6-7
                        conv(384, 256, 3, 1, 1), nn::ReLU(),                // 8-9
                        conv(256, 256, 3, 1, 1), nn::ReLU());               // 10-11
}

nn::Sequential vgg16_features() {
  nn::Sequential s;
  int64_t in = 3;
  // Configuration "D": 0 stands for a 2×2 max-pool.
  for (int64_t c : {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512}) {
    if (c == 0) {
      s->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(2).stride(2)));
    } else {
      s->push_back(conv(in, c, 3, 1, 1));
      s->push_back(nn::ReLU());
      in = c;
    }
  }
  return s;  // 30 layers: the final pool is not tapped
}

nn::Sequential squeezenet1_1_features() {
  return nn::Sequential(conv(3, 64, 3, 2), nn::ReLU(), max_pool(true),      // 0-2
                        Fire(64, 16, 64), Fire(128, 16, 64), max_pool(true),  // 3-5
                        Fire(128, 32, 128), Fire(256, 32, 128), max_pool(true),  // 6-8
                        Fire(256, 48, 192), Fire(384, 48, 192),              // 9-10
                        Fire(384, 64, 256), Fire(512, 64, 256));            // 11-12
}

}  // namespace

const char* lpips_backbone_name(LpipsBackbone backbone) {
  switch (backbone) {
    case LpipsBackbone::Alex: return "alex";
    case LpipsBackbone::Vgg: return "vgg";
    case LpipsBackbone::Squeeze: return "squeeze";
  }
  return "?";
}

LpipsBackbone detect_lpips_backbone(const TensorMap& weights, const std::string& source) {
  auto first = weights.find("features.0.weight");
  if (first != weights.end() && first->second.dim() == 4) {
    if (first->second.size(3) == 11) return LpipsBackbone::Alex;
    if (weights.count("features.3.squeeze.weight")) return LpipsBackbone::Squeeze;
    if (weights.count("features.28.weight")) return LpipsBackbone::Vgg;
  }
  fail("'{}' is not a torchvision AlexNet, VGG-16 or SqueezeNet 1.1 state dict (the LPIPS trunks: "
       "alexnet-owt-7be5be79.pth, vgg16-397923af.pth or squeezenet1_1-b8a52dc0.pth)",
       source);
}

LpipsTrunkImpl::LpipsTrunkImpl(LpipsBackbone backbone) {
  // The lpips package's slices end after these layers (ReLU outputs).
  switch (backbone) {
    case LpipsBackbone::Alex:
      features_ = alexnet_features();
      tap_after_ = {1, 4, 7, 9, 11};
      channels_ = {64, 192, 384, 256, 256};
      break;
    case LpipsBackbone::Vgg:
      features_ = vgg16_features();
      tap_after_ = {3, 8, 15, 22, 29};
      channels_ = {64, 128, 256, 512, 512};
      break;
    case LpipsBackbone::Squeeze:
      features_ = squeezenet1_1_features();
      tap_after_ = {1, 4, 7, 9, 10, 11, 12};
      channels_ = {64, 128, 256, 384, 384, 512, 512};
      break;
  }
  register_module("features", features_);
}

std::vector<torch::Tensor> LpipsTrunkImpl::forward(torch::Tensor x) {
  std::vector<torch::Tensor> taps;
  size_t i = 0;
  for (auto& layer : *features_) {
    x = layer.forward(x);
    if (i++ == tap_after_[taps.size()]) {
      taps.push_back(x);
      if (taps.size() == tap_after_.size()) break;
    }
  }
  return taps;
}

LpipsHeadsImpl::LpipsHeadsImpl(const std::vector<int64_t>& channels) {
  for (size_t k = 0; k < channels.size(); ++k) {
    // lpips' Sequential(Dropout, Conv2d): the dropout is inactive in evaluation
    // but takes index 0, so the weight is "lin<k>.model.1.weight".
    auto head = nn::Conv2d(nn::Conv2dOptions(channels[k], 1, 1).bias(false));
    auto lin = std::make_shared<nn::Module>();
    lin->register_module("model", nn::Sequential(nn::Identity(), head));
    register_module(fmt::format("lin{}", k), lin);
    heads_.push_back(head);
  }
}

torch::Tensor LpipsHeadsImpl::forward(size_t k, const torch::Tensor& squared_difference) {
  return heads_.at(k)(squared_difference).mean({2, 3});
}

LpipsNetImpl::LpipsNetImpl(LpipsBackbone backbone) : backbone_(backbone) {
  trunk = register_module("net", LpipsTrunk(backbone));
  heads = register_module("heads", LpipsHeads(trunk->channels()));
  // The constants lpips' ScalingLayer maps [-1, 1] inputs with (ImageNet statistics).
  shift_ = register_buffer("shift", torch::tensor({-0.030f, -0.088f, -0.188f}).view({1, 3, 1, 1}));
  scale_ = register_buffer("scale", torch::tensor({0.458f, 0.448f, 0.450f}).view({1, 3, 1, 1}));
}

torch::Tensor LpipsNetImpl::forward(const torch::Tensor& x, const torch::Tensor& y) {
  UD2M_CHECK(x.sizes() == y.sizes() && x.dim() == 4 && x.size(1) == 3,
             "LPIPS compares two (N, 3, H, W) batches of one shape, not {} and {}", fmt::join(x.sizes(), "x"),
             fmt::join(y.sizes(), "x"));
  const int64_t n = x.size(0);
  // One trunk pass over both batches.
  auto taps = trunk->forward((torch::cat({x, y}) - shift_) / scale_);
  torch::Tensor distance;
  for (size_t k = 0; k < taps.size(); ++k) {
    // lpips.normalize_tensor: eps added to the norm, not under the root.
    auto unit = taps[k] / (taps[k].pow(2).sum(1, true).sqrt() + 1e-10);
    auto d = heads->forward(k, (unit.narrow(0, 0, n) - unit.narrow(0, n, n)).pow(2));
    distance = distance.defined() ? distance + d : d;
  }
  return distance.flatten();
}

LpipsNet load_lpips(const std::string& backbone_file, const std::string& heads_file) {
  auto trunk_weights = state_dict_of(read_checkpoint(backbone_file));
  const auto backbone = detect_lpips_backbone(trunk_weights, backbone_file);
  // The classifier of the ImageNet model is not part of LPIPS.
  for (auto it = trunk_weights.begin(); it != trunk_weights.end();)
    it = it->first.rfind("classifier.", 0) == 0 ? trunk_weights.erase(it) : std::next(it);
  LpipsNet net(backbone);
  load_state_dict(*net->trunk, trunk_weights, backbone_file);
  auto head_weights = state_dict_of(read_checkpoint(heads_file));
  try {
    load_state_dict(*net->heads, head_weights, heads_file);
  } catch (const Error& e) {
    fail("{} (the linear heads for the '{}' trunk of '{}': the lpips package's weights/v0.1/{}.pth)", e.what(),
         lpips_backbone_name(backbone), backbone_file, lpips_backbone_name(backbone));
  }
  net->eval();
  for (auto& p : net->parameters()) p.set_requires_grad(false);
  return net;
}

}  // namespace ud2m::nets
