// The residual blocks' GroupNorm + scale/shift + SiLU on the CPU: the fused
// kernel (nets/group_norm_silu_cpu.cpp) against the composed PyTorch ops it
// replaces, same input, same threads, per layout and dtype, at activation
// sizes of a 256² ADM pass. Prints milliseconds (fastest of 15) and the ratio.
//   build/bench/group_norm_silu [threads]
#include <torch/torch.h>

#include <cstdio>
#include <string>

#include "core/process.hpp"
#include "fastest_time.hpp"
#include "nets/fp32_group_norm.hpp"

using ud2m::bench::time_ms;

int main(int argc, char** argv) {
  ud2m::configure_process();
  if (argc > 1) torch::set_num_threads(std::stoi(argv[1]));
  torch::NoGradGuard no_grad;
  std::printf("%-6s %-5s %-16s %10s %12s %7s\n", "dtype", "nchw", "shape", "fused ms", "composed ms", "ratio");
  for (auto [channels, size] : {std::pair{128, 256}, std::pair{256, 64}, std::pair{512, 16}})
    for (auto dtype : {torch::kFloat32, torch::kBFloat16})
      for (auto format : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
        ud2m::nets::Fp32GroupNorm norm(32, channels, 1e-5);
        auto x = torch::randn({1, channels, size, size}).to(dtype).contiguous(format);
        auto scale = (1 + torch::randn({1, channels, 1, 1})).to(dtype), shift = torch::randn({1, channels, 1, 1}).to(dtype);
        const double fused = time_ms([&] { norm->forward_silu(x, scale, shift); });
        const double composed = time_ms([&] { torch::silu(norm(x) * scale + shift); });
        const std::string shape = std::to_string(channels) + "x" + std::to_string(size) + "x" + std::to_string(size);
        std::printf("%-6s %-5s %-16s %10.3f %12.3f %6.2fx\n", dtype == torch::kFloat32 ? "fp32" : "bf16",
                    format == torch::MemoryFormat::Contiguous ? "NCHW" : "NHWC", shape.c_str(), fused, composed,
                    composed / fused);
      }
}
