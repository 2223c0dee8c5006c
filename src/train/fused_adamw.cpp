#include "train/fused_adamw.hpp"

#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/error.hpp"

namespace ud2m::train {
namespace {

// `t` with `like`'s strides: the fused kernels treat tensors as flat arrays,
// so a channels-last weight with a contiguous gradient (or a moment loaded
// from a checkpoint) would be updated element by element out of place.
torch::Tensor laid_out_like(const torch::Tensor& t, const torch::Tensor& like) {
  return t.strides() == like.strides() ? t : torch::empty_like(like).copy_(t);
}

// One fused call's tensors: parameters that share a device, a dtype and a step count.
struct Bucket {
  std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs;
};

}  // namespace

torch::Tensor FusedAdamW::step(LossClosure closure) {
  UD2M_CHECK(!closure, "FusedAdamW takes no closure");
  torch::NoGradGuard no_grad;
  for (auto& group : param_groups()) {
    auto& options = static_cast<torch::optim::AdamWOptions&>(group.options());
    UD2M_CHECK(!options.amsgrad(), "FusedAdamW does not implement amsgrad");
    std::map<std::tuple<std::string, torch::ScalarType, int64_t>, Bucket> buckets;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;  // as LibTorch's AdamW: no gradient, no step
      auto& slot = state()[p.unsafeGetTensorImpl()];
      if (!slot) {
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        slot = std::move(fresh);
      }
      auto& s = static_cast<torch::optim::AdamWParamState&>(*slot);
      s.exp_avg(laid_out_like(s.exp_avg(), p));
      s.exp_avg_sq(laid_out_like(s.exp_avg_sq(), p));
      s.step(s.step() + 1);
      auto& b = buckets[{p.device().str(), p.scalar_type(), s.step()}];
      b.params.push_back(p);
      b.grads.push_back(laid_out_like(p.grad(), p));
      b.exp_avgs.push_back(s.exp_avg());
      b.exp_avg_sqs.push_back(s.exp_avg_sq());
    }
    const auto [beta1, beta2] = options.betas();
    for (auto& [key, b] : buckets) {
      // The kernels read the step count (after this step) from a tensor on the parameters' device.
      auto count = torch::full({}, double(std::get<2>(key)), b.params[0].options().dtype(torch::kFloat32));
      const std::vector<torch::Tensor> steps(b.params.size(), count);
      at::_fused_adamw_(b.params, b.grads, b.exp_avgs, b.exp_avg_sqs, {}, steps, options.lr(), beta1, beta2,
                        options.weight_decay(), options.eps(), /*amsgrad=*/false, /*maximize=*/false);
    }
  }
  return {};
}

}  // namespace ud2m::train
