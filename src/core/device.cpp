#include "core/device.hpp"

#include <torch/cuda.h>

#include <optional>

#include "core/error.hpp"

namespace ud2m {

torch::Device parse_device(const std::string& name) {
  UD2M_CHECK(name == "cpu" || name.rfind("cuda", 0) == 0, "unknown device '{}': use cpu, cuda or cuda:N", name);
  std::optional<torch::Device> device;
  try {
    device.emplace(name);
  } catch (const c10::Error&) {
    fail("unknown device '{}': use cpu, cuda or cuda:N", name);
  }
  if (device->is_cuda()) {
    UD2M_CHECK(torch::cuda::is_available(), "device '{}' asked for, but no CUDA GPU is usable here (none present, "
               "or LibTorch built without CUDA)", name);
    const int index = device->has_index() ? device->index() : 0;
    UD2M_CHECK(index < static_cast<int>(torch::cuda::device_count()), "device '{}' asked for, but this machine has "
               "{} CUDA GPU(s)", name, torch::cuda::device_count());
  }
  return *device;
}

}  // namespace ud2m
