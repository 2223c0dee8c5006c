#include <gtest/gtest.h>
#include <torch/torch.h>

#include "io/safetensors.hpp"
#include "train/adam_state.hpp"
#include "train/ema.hpp"
#include "train/fused_adamw.hpp"

using namespace ud2m;

namespace {

// A weight in channels-last (its gradient arrives contiguous), a matrix, a
// scalar that gets no gradient on odd steps (so its step count lags), in two
// groups with their own learning rate and weight decay.
struct Parameters {
  torch::Tensor conv, matrix, scalar;
  explicit Parameters(uint64_t seed) {
    torch::manual_seed(seed);
    conv = torch::randn({6, 4, 3, 3}).contiguous(torch::MemoryFormat::ChannelsLast).requires_grad_();
    matrix = torch::randn({5, 7}).requires_grad_();
    scalar = torch::tensor(0.3).requires_grad_();
  }
  std::vector<torch::optim::OptimizerParamGroup> groups() const {
    std::vector<torch::optim::OptimizerParamGroup> g;
    g.emplace_back(std::vector<torch::Tensor>{conv, matrix},
                   std::make_unique<torch::optim::AdamWOptions>(
                       torch::optim::AdamWOptions(3e-2).betas({0.9, 0.99}).weight_decay(0.05)));
    g.emplace_back(std::vector<torch::Tensor>{scalar},
                   std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(1e-1).weight_decay(0)));
    return g;
  }
  train::NamedParameters named() const { return {{"conv", conv}, {"matrix", matrix}, {"scalar", scalar}}; }
};

void take_step(torch::optim::AdamW& optimizer, const Parameters& p, int step) {
  optimizer.zero_grad();
  auto loss = (p.conv.sin() * torch::linspace(-1, 1, p.conv.numel()).view(p.conv.sizes())).sum() +
              (p.matrix * p.matrix).mean() * (1 + step);
  if (step % 2 == 0) loss = loss + (p.scalar - 2).pow(2);
  loss.backward();
  optimizer.step();
}

double max_difference(const Parameters& a, const Parameters& b) {
  double worst = 0;
  for (auto [x, y] : {std::pair{a.conv, b.conv}, {a.matrix, b.matrix}, {a.scalar, b.scalar}})
    worst = std::max(worst, (x - y).abs().max().item<double>());
  return worst;
}

}  // namespace

TEST(FusedAdamW, TakesLibTorchsAdamWSteps) {
  Parameters ours(1), theirs(1);
  train::FusedAdamW fused(ours.groups());
  torch::optim::AdamW reference(theirs.groups());
  for (int step = 0; step < 6; ++step) {
    take_step(fused, ours, step);
    take_step(reference, theirs, step);
  }
  EXPECT_GT((ours.conv - Parameters(1).conv).abs().max().item<double>(), 0.1);  // the steps moved it
  EXPECT_LT(max_difference(ours, theirs), 1e-6);
  EXPECT_TRUE(ours.conv.is_contiguous(torch::MemoryFormat::ChannelsLast));

  // Its state saves and loads as LibTorch's does (the lagging scalar included), and the steps go on the same.
  TensorMap saved;
  const int64_t count = train::save_adam_state(fused, ours.named(), "adam.", saved);
  EXPECT_EQ(count, 3);  // the scalar's: it had a gradient on 3 of the 6 steps
  Parameters resumed(1);
  {
    torch::NoGradGuard no_grad;
    for (auto [to, from] : {std::pair{resumed.conv, ours.conv}, {resumed.matrix, ours.matrix}, {resumed.scalar, ours.scalar}})
      to.copy_(from);
  }
  train::FusedAdamW reloaded(resumed.groups());
  for (auto& [name, t] : saved) t = t.contiguous();  // as read from a file
  train::load_adam_state(reloaded, resumed.named(), "adam.", saved, count);
  for (auto& [name, p] : resumed.named()) {  // load_adam_state gives every tensor one step count
    auto& s = static_cast<torch::optim::AdamWParamState&>(*reloaded.state()[p.unsafeGetTensorImpl()]);
    s.step(name == "scalar" ? 3 : 6);
  }
  for (int step = 6; step < 9; ++step) {
    take_step(reloaded, resumed, step);
    take_step(reference, theirs, step);
  }
  EXPECT_LT(max_difference(resumed, theirs), 1e-6);
}

TEST(Ema, MovesEachWeightTowardsTheModel) {
  torch::manual_seed(0);
  torch::nn::Conv2d model(torch::nn::Conv2dOptions(3, 4, 3)), ema(torch::nn::Conv2dOptions(3, 4, 3));
  const auto before = ema->weight.detach().clone();
  train::update_ema(*ema, *model, 0.999, /*step=*/5);  // warm-up: d = 6 / 15
  const double d = 6.0 / 15.0;
  const auto expected = d * before + (1 - d) * model->weight.detach();
  EXPECT_LT((ema->weight - expected).abs().max().item<double>(), 1e-6);
  EXPECT_FALSE(ema->weight.grad().defined());
}
