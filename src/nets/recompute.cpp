#include "nets/recompute.hpp"

#include <ATen/autocast_mode.h>
#include <torch/custom_class.h>

#include "nets/fused_path.hpp"

namespace ud2m::nets {

namespace {

struct Saved : torch::CustomClassHolder {
  std::function<torch::Tensor(const torch::Tensor&)> f;
  bool autocast = false;
  at::ScalarType autocast_dtype = at::kBFloat16;
  c10::DeviceType device = c10::DeviceType::CPU;  // whose autocast state f ran under
};

class Recompute : public torch::autograd::Function<Recompute> {
 public:
  // `anchor` requires grad, so the node is recorded even when x does not
  // (f's parameters must still get their gradients).
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& /*anchor*/, c10::intrusive_ptr<Saved> saved) {
    saved->device = x.device().type();
    saved->autocast = at::autocast::is_autocast_enabled(saved->device);
    saved->autocast_dtype = at::autocast::get_autocast_dtype(saved->device);
    ctx->save_for_backward({x});
    ctx->saved_data["f"] = c10::IValue::make_capsule(saved);
    torch::NoGradGuard no_grad;
    const ComposedOpsOnly same_ops_as_the_recomputation;
    return saved->f(x);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    auto saved = c10::static_intrusive_pointer_cast<Saved>(ctx->saved_data["f"].toCapsule());
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    torch::Tensor y;
    {
      torch::AutoGradMode enable(true);
      // The backward pass may run on another thread (a GPU's), whose autocast state is its own.
      const auto device = saved->device;
      const bool was = at::autocast::is_autocast_enabled(device);
      const auto was_dtype = at::autocast::get_autocast_dtype(device);
      at::autocast::set_autocast_dtype(device, saved->autocast_dtype);
      at::autocast::set_autocast_enabled(device, saved->autocast);
      y = saved->f(x);
      at::autocast::set_autocast_enabled(device, was);
      at::autocast::set_autocast_dtype(device, was_dtype);
    }
    torch::autograd::backward({y}, {grad_outputs[0]});
    return {x.grad(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor recompute_in_backward(std::function<torch::Tensor(const torch::Tensor&)> f, const torch::Tensor& x) {
  if (!torch::GradMode::is_enabled()) return f(x);
  auto saved = c10::make_intrusive<Saved>();
  saved->f = std::move(f);
  static thread_local auto anchor = torch::empty({0}, torch::requires_grad());
  return Recompute::apply(x, anchor, saved);
}

}  // namespace ud2m::nets
