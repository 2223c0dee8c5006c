#include "nets/inception.hpp"

#include "core/error.hpp"
#include "io/checkpoint.hpp"
#include "nets/state_dict.hpp"

namespace ud2m::nets {
namespace {

namespace nn = torch::nn;
namespace F = torch::nn::functional;
using torch::Tensor;
using Pair = torch::ExpandingArray<2>;

// Convolution without bias, batch norm (eps 1e-3, TensorFlow's), ReLU.
class BasicConv2dImpl : public nn::Module {
 public:
  BasicConv2dImpl(int64_t in, int64_t out, Pair kernel, Pair padding = 0, Pair stride = 1)
      : conv_(register_module("conv", nn::Conv2d(nn::Conv2dOptions(in, out, kernel)
                                                     .stride(stride)
                                                     .padding(padding)
                                                     .bias(false)))),
        bn_(register_module("bn", nn::BatchNorm2d(nn::BatchNorm2dOptions(out).eps(1e-3)))) {}
  Tensor forward(const Tensor& x) { return torch::relu(bn_(conv_(x))); }

 private:
  nn::Conv2d conv_;
  nn::BatchNorm2d bn_;
};
TORCH_MODULE(BasicConv2d);

// TensorFlow's 3×3 average pool, which leaves padded zeros out of the mean.
Tensor avg_pool_3x3(const Tensor& x) {
  return F::avg_pool2d(x, F::AvgPool2dFuncOptions(3).stride(1).padding(1).count_include_pad(false));
}
Tensor max_pool_3x3_s2(const Tensor& x) { return F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(2)); }

// A module whose members are registered under the given names.
template <typename M>
M add(nn::Module& parent, const std::string& name, M module) {
  return parent.register_module(name, module);
}

// Mixed_5b/5c/5d: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | pool→1×1.
class InceptionAImpl : public nn::Module {
 public:
  InceptionAImpl(int64_t in, int64_t pool_features)
      : b1x1(add(*this, "branch1x1", BasicConv2d(in, 64, 1))),
        b5x5_1(add(*this, "branch5x5_1", BasicConv2d(in, 48, 1))),
        b5x5_2(add(*this, "branch5x5_2", BasicConv2d(48, 64, 5, 2))),
        b3x3dbl_1(add(*this, "branch3x3dbl_1", BasicConv2d(in, 64, 1))),
        b3x3dbl_2(add(*this, "branch3x3dbl_2", BasicConv2d(64, 96, 3, 1))),
        b3x3dbl_3(add(*this, "branch3x3dbl_3", BasicConv2d(96, 96, 3, 1))),
        bpool(add(*this, "branch_pool", BasicConv2d(in, pool_features, 1))) {}

  Tensor forward(const Tensor& x) {
    return torch::cat({b1x1(x), b5x5_2(b5x5_1(x)), b3x3dbl_3(b3x3dbl_2(b3x3dbl_1(x))), bpool(avg_pool_3x3(x))}, 1);
  }

 private:
  BasicConv2d b1x1, b5x5_1, b5x5_2, b3x3dbl_1, b3x3dbl_2, b3x3dbl_3, bpool;
};
TORCH_MODULE(InceptionA);

// Mixed_6a: grid reduction 35 → 17.
class InceptionBImpl : public nn::Module {
 public:
  explicit InceptionBImpl(int64_t in)
      : b3x3(add(*this, "branch3x3", BasicConv2d(in, 384, 3, 0, 2))),
        b3x3dbl_1(add(*this, "branch3x3dbl_1", BasicConv2d(in, 64, 1))),
        b3x3dbl_2(add(*this, "branch3x3dbl_2", BasicConv2d(64, 96, 3, 1))),
        b3x3dbl_3(add(*this, "branch3x3dbl_3", BasicConv2d(96, 96, 3, 0, 2))) {}

  Tensor forward(const Tensor& x) {
    return torch::cat({b3x3(x), b3x3dbl_3(b3x3dbl_2(b3x3dbl_1(x))), max_pool_3x3_s2(x)}, 1);
  }

 private:
  BasicConv2d b3x3, b3x3dbl_1, b3x3dbl_2, b3x3dbl_3;
};
TORCH_MODULE(InceptionB);

// Mixed_6b..6e: factorised 7×7 convolutions (1×7 and 7×1).
class InceptionCImpl : public nn::Module {
 public:
  InceptionCImpl(int64_t in, int64_t c7)
      : b1x1(add(*this, "branch1x1", BasicConv2d(in, 192, 1))),
        b7x7_1(add(*this, "branch7x7_1", BasicConv2d(in, c7, 1))),
        b7x7_2(add(*this, "branch7x7_2", BasicConv2d(c7, c7, Pair{1, 7}, Pair{0, 3}))),
        b7x7_3(add(*this, "branch7x7_3", BasicConv2d(c7, 192, Pair{7, 1}, Pair{3, 0}))),
        b7x7dbl_1(add(*this, "branch7x7dbl_1", BasicConv2d(in, c7, 1))),
        b7x7dbl_2(add(*this, "branch7x7dbl_2", BasicConv2d(c7, c7, Pair{7, 1}, Pair{3, 0}))),
        b7x7dbl_3(add(*this, "branch7x7dbl_3", BasicConv2d(c7, c7, Pair{1, 7}, Pair{0, 3}))),
        b7x7dbl_4(add(*this, "branch7x7dbl_4", BasicConv2d(c7, c7, Pair{7, 1}, Pair{3, 0}))),
        b7x7dbl_5(add(*this, "branch7x7dbl_5", BasicConv2d(c7, 192, Pair{1, 7}, Pair{0, 3}))),
        bpool(add(*this, "branch_pool", BasicConv2d(in, 192, 1))) {}

  Tensor forward(const Tensor& x) {
    auto b7 = b7x7_3(b7x7_2(b7x7_1(x)));
    auto b7dbl = b7x7dbl_5(b7x7dbl_4(b7x7dbl_3(b7x7dbl_2(b7x7dbl_1(x)))));
    return torch::cat({b1x1(x), b7, b7dbl, bpool(avg_pool_3x3(x))}, 1);
  }

 private:
  BasicConv2d b1x1, b7x7_1, b7x7_2, b7x7_3, b7x7dbl_1, b7x7dbl_2, b7x7dbl_3, b7x7dbl_4, b7x7dbl_5, bpool;
};
TORCH_MODULE(InceptionC);

// Mixed_7a: grid reduction 17 → 8.
class InceptionDImpl : public nn::Module {
 public:
  explicit InceptionDImpl(int64_t in)
      : b3x3_1(add(*this, "branch3x3_1", BasicConv2d(in, 192, 1))),
        b3x3_2(add(*this, "branch3x3_2", BasicConv2d(192, 320, 3, 0, 2))),
        b7x7x3_1(add(*this, "branch7x7x3_1", BasicConv2d(in, 192, 1))),
        b7x7x3_2(add(*this, "branch7x7x3_2", BasicConv2d(192, 192, Pair{1, 7}, Pair{0, 3}))),
        b7x7x3_3(add(*this, "branch7x7x3_3", BasicConv2d(192, 192, Pair{7, 1}, Pair{3, 0}))),
        b7x7x3_4(add(*this, "branch7x7x3_4", BasicConv2d(192, 192, 3, 0, 2))) {}

  Tensor forward(const Tensor& x) {
    return torch::cat({b3x3_2(b3x3_1(x)), b7x7x3_4(b7x7x3_3(b7x7x3_2(b7x7x3_1(x)))), max_pool_3x3_s2(x)}, 1);
  }

 private:
  BasicConv2d b3x3_1, b3x3_2, b7x7x3_1, b7x7x3_2, b7x7x3_3, b7x7x3_4;
};
TORCH_MODULE(InceptionD);

// Mixed_7b/7c: split 1×3 / 3×1 branches. The FID graph pools by average in
// 7b and by maximum in 7c (pytorch-fid's FIDInceptionE_1 / E_2).
class InceptionEImpl : public nn::Module {
 public:
  InceptionEImpl(int64_t in, bool max_pool)
      : max_pool_(max_pool),
        b1x1(add(*this, "branch1x1", BasicConv2d(in, 320, 1))),
        b3x3_1(add(*this, "branch3x3_1", BasicConv2d(in, 384, 1))),
        b3x3_2a(add(*this, "branch3x3_2a", BasicConv2d(384, 384, Pair{1, 3}, Pair{0, 1}))),
        b3x3_2b(add(*this, "branch3x3_2b", BasicConv2d(384, 384, Pair{3, 1}, Pair{1, 0}))),
        b3x3dbl_1(add(*this, "branch3x3dbl_1", BasicConv2d(in, 448, 1))),
        b3x3dbl_2(add(*this, "branch3x3dbl_2", BasicConv2d(448, 384, 3, 1))),
        b3x3dbl_3a(add(*this, "branch3x3dbl_3a", BasicConv2d(384, 384, Pair{1, 3}, Pair{0, 1}))),
        b3x3dbl_3b(add(*this, "branch3x3dbl_3b", BasicConv2d(384, 384, Pair{3, 1}, Pair{1, 0}))),
        bpool(add(*this, "branch_pool", BasicConv2d(in, 192, 1))) {}

  Tensor forward(const Tensor& x) {
    auto b3 = b3x3_1(x);
    auto b3dbl = b3x3dbl_2(b3x3dbl_1(x));
    auto pooled = max_pool_ ? F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(1).padding(1)) : avg_pool_3x3(x);
    return torch::cat({b1x1(x), b3x3_2a(b3), b3x3_2b(b3), b3x3dbl_3a(b3dbl), b3x3dbl_3b(b3dbl), bpool(pooled)}, 1);
  }

 private:
  bool max_pool_;
  BasicConv2d b1x1, b3x3_1, b3x3_2a, b3x3_2b, b3x3dbl_1, b3x3dbl_2, b3x3dbl_3a, b3x3dbl_3b, bpool;
};
TORCH_MODULE(InceptionE);

}  // namespace

FidInceptionImpl::FidInceptionImpl() {
  auto block = [this](const std::string& name, auto module) {
    register_module(name, module.ptr());
    blocks_.emplace_back(module);
  };
  auto pool = [this] { blocks_.emplace_back(nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2))); };
  block("Conv2d_1a_3x3", BasicConv2d(3, 32, 3, 0, 2));
  block("Conv2d_2a_3x3", BasicConv2d(32, 32, 3));
  block("Conv2d_2b_3x3", BasicConv2d(32, 64, 3, 1));
  pool();
  block("Conv2d_3b_1x1", BasicConv2d(64, 80, 1));
  block("Conv2d_4a_3x3", BasicConv2d(80, 192, 3));
  pool();
  block("Mixed_5b", InceptionA(192, 32));
  block("Mixed_5c", InceptionA(256, 64));
  block("Mixed_5d", InceptionA(288, 64));
  block("Mixed_6a", InceptionB(288));
  block("Mixed_6b", InceptionC(768, 128));
  block("Mixed_6c", InceptionC(768, 160));
  block("Mixed_6d", InceptionC(768, 160));
  block("Mixed_6e", InceptionC(768, 192));
  block("Mixed_7a", InceptionD(768));
  block("Mixed_7b", InceptionE(1280, false));
  block("Mixed_7c", InceptionE(2048, true));
}

Tensor FidInceptionImpl::forward(const Tensor& images) {
  UD2M_CHECK(images.dim() == 4 && images.size(1) == 3, "Inception features need (N, 3, H, W) images, not {}",
             fmt::join(images.sizes(), "x"));
  auto x = F::interpolate(images, F::InterpolateFuncOptions()
                                      .size(std::vector<int64_t>{299, 299})
                                      .mode(torch::kBilinear)
                                      .align_corners(false));
  x = 2 * x - 1;
  for (auto& b : blocks_) x = b.forward(x);
  return x.mean({2, 3});  // adaptive average pool to 1×1
}

FidInception load_fid_inception(const std::string& path) {
  auto weights = state_dict_of(read_checkpoint(path));
  // The classifier is not part of the features. Files saved before PyTorch 0.4.1
  // lack BatchNorm's step counter; PyTorch fills it with 0 on load, so do we.
  weights.erase("fc.weight");
  weights.erase("fc.bias");
  std::vector<std::string> norms;
  for (auto& [name, t] : weights)
    if (name.size() > 13 && name.compare(name.size() - 13, 13, ".running_mean") == 0)
      norms.push_back(name.substr(0, name.size() - 13));
  for (auto& prefix : norms) weights.emplace(prefix + ".num_batches_tracked", torch::zeros({}, torch::kLong));
  FidInception net;
  try {
    load_state_dict(*net, weights, path);
  } catch (const Error& e) {
    fail("{} (FID needs pytorch-fid's Inception weights, pt_inception-2015-12-05-6726825d.pth)", e.what());
  }
  net->eval();
  for (auto& p : net->parameters()) p.set_requires_grad(false);
  return net;
}

}  // namespace ud2m::nets
