// Times one forward pass of a prior's network (the cost of one NFE), for
// bench/adm_forward.py, which runs PyTorch on the same weights in the same run.
// Usage: adm_forward MODEL SIZE BATCH fp32|bf16 channels_last(0|1) ITERS THREADS [IO.safetensors]
// With IO, the input x and timesteps t are read from that file and the output
// is written to IO.out.safetensors (key eps), for output conformance.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "diffusion/prior.hpp"
#include "io/safetensors.hpp"

// This process's peak resident memory (VmHWM; getrusage's maxrss survives exec
// and would report the Python parent's peak).
double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0.0;
}

int main(int argc, char** argv) {
  if (argc != 8 && argc != 9) {
    std::fprintf(stderr, "usage: %s MODEL SIZE BATCH fp32|bf16 CHANNELS_LAST ITERS THREADS [IO.safetensors]\n", argv[0]);
    return 2;
  }
  const int64_t size = std::atoi(argv[2]), batch = std::atoi(argv[3]);
  const bool bf16 = std::string(argv[4]) == "bf16", channels_last = std::atoi(argv[5]) != 0;
  const int iters = std::atoi(argv[6]);
  at::set_num_threads(std::atoi(argv[7]));
  auto prior = ud2m::diffusion::load_prior(argv[1]);
  prior->set_inference_precision(bf16 ? torch::kBFloat16 : torch::kFloat32, channels_last);
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  auto x = torch::randn({batch, prior->channels(), size, size});
  auto t = torch::full({batch}, 500.0f);
  if (argc == 9) {
    auto io = ud2m::read_safetensors(argv[8]);
    x = io.tensors.at("x").to(torch::kFloat32);
    t = io.tensors.at("t").to(torch::kFloat32);
  }
  if (channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  prior->epsilon(x, t);  // warm-up: allocator, oneDNN primitive caches
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) prior->epsilon(x, t);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iters;
  if (argc == 9)
    ud2m::write_safetensors(std::string(argv[8]) + ".out.safetensors",
                                {{"eps", prior->epsilon(x, t).to(torch::kFloat32).contiguous()}});
  std::printf("{\"seconds_per_pass\": %.6f, \"peak_rss_mib\": %.1f}\n", seconds, peak_rss_mib());
  return 0;
}
