// bf16 autocast for a scope: matmuls and convolutions in bf16 with fp32
// master weights — the main speed lever on CPUs with AVX-512 bf16 and on GPUs.
#pragma once
#include <ATen/autocast_mode.h>

namespace ud2m::train {

class Bf16Autocast {
 public:
  Bf16Autocast(c10::DeviceType device, bool enabled)
      : device_(device), was_enabled_(at::autocast::is_autocast_enabled(device)) {
    at::autocast::set_autocast_dtype(device_, at::kBFloat16);
    at::autocast::set_autocast_enabled(device_, enabled);
  }
  ~Bf16Autocast() {
    at::autocast::set_autocast_enabled(device_, was_enabled_);
    if (!was_enabled_) at::autocast::clear_cache();
  }
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  c10::DeviceType device_;
  bool was_enabled_;
};

}  // namespace ud2m::train
