#include "core/device.hpp"

#include <torch/cuda.h>

#include <optional>

#include "core/error.hpp"

#ifdef UD2M_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

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

bool has_fast_bf16(const torch::Device& device) {
  if (device.is_cuda()) return true;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
}

double peak_device_memory_mib(const torch::Device& device) {
#ifdef UD2M_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.has_index() ? device.index() : 0);
    const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    return static_cast<double>(stats.allocated_bytes[aggregate].peak) / (1024.0 * 1024.0);
  }
#endif
  (void)device;
  return 0.0;
}

}  // namespace ud2m
