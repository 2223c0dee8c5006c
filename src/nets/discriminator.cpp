#include "nets/discriminator.hpp"

#include "core/error.hpp"

namespace ud2m::nets {

namespace {
torch::nn::Conv2d conv3x3(int64_t in, int64_t out) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1));
}
torch::nn::LeakyReLU leaky() { return torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(0.2)); }
}  // namespace

DiscriminatorImpl::DiscriminatorImpl(int64_t image_size, int64_t image_channels) {
  UD2M_CHECK(image_size % 32 == 0 && image_size > 0,
             "the discriminator needs image sides that are multiples of 32, not {}", image_size);
  features = torch::nn::Sequential(conv3x3(2 * image_channels, 32), leaky());
  int64_t channels = 32, side = image_size;
  for (int64_t next : {64, 128, 256, 128, 64}) {
    side /= 2;
    features->push_back(torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(2)));
    features->push_back(conv3x3(channels, next));
    if (side > 1)
      features->push_back(torch::nn::InstanceNorm2d(torch::nn::InstanceNorm2dOptions(next).affine(true)));
    else
      features->push_back(torch::nn::GroupNorm(torch::nn::GroupNormOptions(1, next)));
    features->push_back(leaky());
    channels = next;
  }
  register_module("features", features);
  head = register_module("head", torch::nn::Linear(channels * side * side, 1));
}

torch::Tensor DiscriminatorImpl::forward(const torch::Tensor& x, const torch::Tensor& y_up) {
  return head(features->forward(torch::cat({x, y_up}, 1)).flatten(1)).squeeze(1);
}

}  // namespace ud2m::nets
