#include "nets/initialiser.hpp"

#include <cmath>

#include "core/error.hpp"

namespace ud2m::nets {

namespace {

torch::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1).stride(stride));
}

// norm → SiLU → conv → norm → SiLU → conv, added to the input.
class ResidualImpl : public torch::nn::Module {
 public:
  explicit ResidualImpl(int64_t channels)
      : norm1(register_module("norm1", torch::nn::GroupNorm(8, channels))),
        conv1(register_module("conv1", conv3x3(channels, channels))),
        norm2(register_module("norm2", torch::nn::GroupNorm(8, channels))),
        conv2(register_module("conv2", conv3x3(channels, channels))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = conv1(torch::silu(norm1(x)));
    return x + conv2(torch::silu(norm2(h)));
  }

 private:
  torch::nn::GroupNorm norm1;
  torch::nn::Conv2d conv1;
  torch::nn::GroupNorm norm2;
  torch::nn::Conv2d conv2;
};
TORCH_MODULE(Residual);

}  // namespace

InitialiserImpl::InitialiserImpl(int64_t image_channels, int64_t width) {
  UD2M_CHECK(width % 8 == 0 && width > 0, "the initialiser's width must be a positive multiple of 8, not {}", width);
  in = register_module("in", conv3x3(2 * image_channels + 2, width));
  full = register_module("full", torch::nn::Sequential(Residual(width), Residual(width)));
  down = register_module("down", conv3x3(width, 2 * width, 2));
  half = register_module("half", torch::nn::Sequential(Residual(2 * width), Residual(2 * width)));
  up = register_module("up", conv3x3(2 * width, width));
  merged = register_module("merged", torch::nn::Sequential(Residual(width)));
  out_norm = register_module("out_norm", torch::nn::GroupNorm(8, width));
  out = register_module("out", conv3x3(width, image_channels));
  torch::NoGradGuard no_grad;
  out->weight.zero_();
  out->bias.zero_();
}

torch::Tensor InitialiserImpl::forward(const torch::Tensor& x0, const torch::Tensor& x_t, double alpha_bar) {
  namespace F = torch::nn::functional;
  auto level = torch::ones_like(x0.narrow(1, 0, 1));
  auto input = torch::cat({x0, std::sqrt(alpha_bar) * x_t, std::sqrt(alpha_bar) * level,
                           std::sqrt(1 - alpha_bar) * level}, 1);
  auto skip = full->forward(in(input));
  auto h = half->forward(down(skip));
  // Back to the skip's size (odd sides included).
  h = F::interpolate(h, F::InterpolateFuncOptions()
                            .size(std::vector<int64_t>{skip.size(2), skip.size(3)})
                            .mode(torch::kNearest));
  h = merged->forward(skip + up(h));
  return x0 + out(torch::silu(out_norm(h)));
}

}  // namespace ud2m::nets
