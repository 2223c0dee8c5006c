#include "nets/lora.hpp"

#include <cmath>
#include <variant>

#include "core/error.hpp"

namespace ud2m::nets {

bool LoraOptions::on_resblocks() const {
  UD2M_CHECK(placement == "attention" || placement == "attention+resblocks",
             "unknown LoRA placement '{}' (attention or attention+resblocks)", placement);
  return placement == "attention+resblocks";
}

LoraImpl::LoraImpl(int64_t in, int64_t out, const LoraOptions& options) : scale_(options.scale()) {
  UD2M_CHECK(options.rank > 0, "the LoRA rank must be positive, not {}", options.rank);
  // A as a Linear layer's default init (Kaiming-uniform, a = √5); B zero.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  A = register_parameter("A", torch::empty({options.rank, in}).uniform_(-bound, bound));
  B = register_parameter("B", torch::zeros({out, options.rank}));
}

torch::Tensor LoraImpl::channels_first(const torch::Tensor& x) const {
  auto a = A.to(x.scalar_type()), b = B.to(x.scalar_type());
  return scale_ * torch::matmul(b, torch::matmul(a, x));
}

torch::Tensor LoraImpl::channels_last(const torch::Tensor& x) const {
  auto a = A.to(x.scalar_type()), b = B.to(x.scalar_type());
  return scale_ * torch::matmul(torch::matmul(x, a.t()), b.t());
}

torch::Tensor LoraImpl::weight_update() const { return scale_ * torch::matmul(B, A); }

ConvLoraImpl::ConvLoraImpl(int64_t in, int64_t out, const LoraOptions& options) : scale_(options.scale()) {
  UD2M_CHECK(options.rank > 0, "the LoRA rank must be positive, not {}", options.rank);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in * 9));  // a Conv2d's default init
  A = register_parameter("A", torch::empty({options.rank, in, 3, 3}).uniform_(-bound, bound));
  B = register_parameter("B", torch::zeros({out, options.rank, 1, 1}));
}

torch::Tensor ConvLoraImpl::forward(const torch::Tensor& x) const {
  namespace F = torch::nn::functional;
  auto a = F::conv2d(x, A.to(x.scalar_type()), F::Conv2dFuncOptions().padding(1));
  return scale_ * F::conv2d(a, B.to(x.scalar_type()));
}

torch::Tensor ConvLoraImpl::weight_update() const {
  const auto rank = A.size(0);
  return scale_ * torch::matmul(B.reshape({-1, rank}), A.reshape({rank, -1})).reshape({B.size(0), A.size(1), 3, 3});
}

namespace {
template <class Holder>
void fold(torch::nn::Module& owner, const std::string& name, torch::Tensor weight, Holder& lora) {
  if (!lora) return;
  torch::NoGradGuard no_grad;
  weight.add_(lora->weight_update().reshape(weight.sizes()).to(weight.scalar_type()));
  owner.unregister_module(name);
  lora = nullptr;
}
}  // namespace

void fold_lora(torch::nn::Module& owner, const std::string& name, torch::Tensor weight, Lora& lora) {
  fold(owner, name, std::move(weight), lora);
}
void fold_lora(torch::nn::Module& owner, const std::string& name, torch::Tensor weight, ConvLora& lora) {
  fold(owner, name, std::move(weight), lora);
}

torch::Tensor with_lora(torch::nn::Conv2dImpl& conv, const ConvLora& lora, const torch::Tensor& x, bool with_bias) {
  namespace F = torch::nn::functional;
  const auto& o = conv.options;
  UD2M_CHECK(with_bias || std::holds_alternative<torch::enumtype::kZeros>(o.padding_mode()),
             "a convolution without its bias needs zero padding");
  auto h = with_bias ? conv.forward(x)
                     : F::conv2d(x, conv.weight, F::Conv2dFuncOptions().stride(o.stride()).padding(o.padding())
                                                     .dilation(o.dilation()).groups(o.groups()));
  return lora ? h + lora->forward(x) : h;
}

}  // namespace ud2m::nets
