// Times one forward pass of a prior's network (the cost of one NFE), for
// bench/adm_forward.py, which runs PyTorch on the same weights in the same run.
// Usage: adm_forward MODEL SIZE BATCH fp32|bf16 CHANNELS_LAST ITERS THREADS [IO.safetensors]
//                    [--device cpu|cuda] [--cuda-graph] [--trace TRACE.json]
// With IO, the input x and timesteps t are read from that file and the output
// is written to IO.out.safetensors (key eps), for output conformance. With
// --trace, one more pass runs under PyTorch's profiler and its operator timeline
// is saved as a Chrome trace (bench/op_times.py sums it by operator).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "core/process.hpp"
#include "diffusion/graphed_denoiser.hpp"
#include "diffusion/prior.hpp"
#include "io/safetensors.hpp"
#include "process_memory.hpp"
#include "train/step_profiler.hpp"

int main(int argc, char** argv) {
  ud2m::configure_process();  // as the CLI: what is timed is what `ud2m` runs
  std::vector<std::string> positional;
  std::string device_name = "cpu", trace;
  bool cuda_graph = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--device" && i + 1 < argc) device_name = argv[++i];
    else if (arg == "--cuda-graph") cuda_graph = true;
    else if (arg == "--trace" && i + 1 < argc) trace = argv[++i];
    else positional.push_back(arg);
  }
  if (positional.size() != 7 && positional.size() != 8) {
    std::fprintf(stderr, "usage: %s MODEL SIZE BATCH fp32|bf16 CHANNELS_LAST ITERS THREADS [IO.safetensors] "
                 "[--device cpu|cuda] [--cuda-graph]\n", argv[0]);
    return 2;
  }
  const int64_t size = std::stoi(positional[1]), batch = std::stoi(positional[2]);
  const bool bf16 = positional[3] == "bf16", channels_last = std::stoi(positional[4]) != 0;
  const int iters = std::stoi(positional[5]);
  at::set_num_threads(std::stoi(positional[6]));
  const auto device = ud2m::parse_device(device_name);
  if (device.is_cuda()) at::globalContext().setBenchmarkCuDNN(true);  // fixed shapes: the fastest kernels

  auto prior = ud2m::diffusion::load_prior(positional[0]);
  prior->module().to(device);
  prior->set_inference_precision(bf16 ? torch::kBFloat16 : torch::kFloat32, channels_last);
  ud2m::diffusion::DenoiserPtr net = prior;
  if (cuda_graph) net = std::make_shared<ud2m::diffusion::GraphedDenoiser>(prior);
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  auto x = torch::randn({batch, prior->channels(), size, size});
  auto t = torch::full({batch}, 500.0f);
  if (positional.size() == 8) {
    auto io = ud2m::read_safetensors(positional[7]);
    x = io.tensors.at("x").to(torch::kFloat32);
    t = io.tensors.at("t").to(torch::kFloat32);
  }
  x = x.to(device);
  t = t.to(device);
  if (channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  net->epsilon(x, t);  // warm-up: allocator, oneDNN/cuDNN algorithm choice, graph capture
  ud2m::synchronize(device);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) net->epsilon(x, t);
  ud2m::synchronize(device);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iters;
  if (!trace.empty()) {  // one more pass, the profiler's "step"
    ud2m::train::StepProfiler profiler(trace, device, /*skip=*/0, /*count=*/1);
    profiler.before_step();
    net->epsilon(x, t);
    profiler.after_step();
  }
  if (positional.size() == 8)
    ud2m::write_safetensors(positional[7] + ".out.safetensors",
                            {{"eps", net->epsilon(x, t).to(torch::kCPU, torch::kFloat32).contiguous()}});
  std::printf("{\"seconds_per_pass\": %.6f, \"peak_rss_mib\": %.1f, \"peak_device_mib\": %.1f}\n", seconds,
              ud2m::bench::peak_rss_mib(), ud2m::peak_device_memory_mib(device));
  return 0;
}
