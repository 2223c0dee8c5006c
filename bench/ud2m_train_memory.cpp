// Peak memory and time of UD2M training steps (generator + discriminator, as
// `ud2m train --method ud2m` runs them) on a randomly initialised prior of a
// published ADM configuration. The setting: ADM-256 at 256², batch 2.
// Usage: ud2m_train_memory CONFIG CROP BATCH STEPS THREADS BF16(0|1) RECOMPUTE(0|1) [K]
//   e.g. ud2m_train_memory adm-256-uncond 256 2 1 2 1 1
// RECOMPUTE 1 is `train --recompute true`: the prior calls are recomputed in
// the backward pass instead of keeping their activations.
// The perceptual term is off (no LPIPS weights here; the prior-feature
// fallback would add a frozen copy of the prior). Prints peak RSS after
// loading (the weights) and after the steps (weights + activations kept for
// the backward pass through the K prior calls + optimiser state).
#include <ATen/Parallel.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "diffusion/prior.hpp"
#include "process_memory.hpp"
#include "train/ud2m_trainer.hpp"

namespace {

// Resets VmHWM to the current RSS (Linux ≥ 4.0), so building and saving the
// random prior does not count.
void reset_peak() { std::ofstream("/proc/self/clear_refs") << "5"; }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8 && argc != 9) {
    std::fprintf(stderr, "usage: %s CONFIG CROP BATCH STEPS THREADS BF16 RECOMPUTE [K]\n", argv[0]);
    return 2;
  }
  using namespace ud2m;
  at::set_num_threads(std::atoi(argv[5]));
  const auto dir = std::filesystem::temp_directory_path() / ("ud2m_train_memory_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  train::Ud2mTrainOptions o;
  o.prior = (dir / "prior.safetensors").string();
  {
    torch::manual_seed(0);
    diffusion::AdmPrior prior(nets::AdmConfig::preset(argv[1]), diffusion::Schedule::linear());
    diffusion::save_prior(o.prior, prior);
  }
  o.data = (std::filesystem::path(UD2M_SOURCE_DIR) / "assets" / "astronaut_256.png").string();
  o.out_dir = (dir / "run").string();
  o.crop = std::atoi(argv[2]);
  o.batch = std::atoi(argv[3]);
  o.bf16 = std::atoi(argv[6]) != 0;
  o.recompute = std::atoi(argv[7]) != 0;
  if (argc == 9) o.blocks = std::atoi(argv[8]);
  const int steps = std::atoi(argv[4]);
  o.steps = steps;
  reset_peak();
  const double before = bench::status_mib("VmRSS:");
  int exit_code = 0;
  try {
    train::Ud2mTrainer trainer(o);
    const double loaded = bench::peak_rss_mib();
    std::printf("config %s, crop %d, batch %d, K = %d, %s, %s, %s threads\n", argv[1], o.crop, o.batch, o.blocks,
                o.bf16 ? "bf16 autocast" : "fp32", o.recompute ? "recomputing the prior calls" : "keeping activations",
                argv[5]);
    std::printf("peak RSS after loading: %.0f MiB (process before: %.0f MiB)\n", loaded, before);
    for (int i = 1; i <= steps; ++i) {
      const auto start = std::chrono::steady_clock::now();
      trainer.step();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("step %d: %.1f s, peak RSS %.0f MiB\n", i, s, bench::peak_rss_mib());
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    exit_code = 1;
  }
  std::filesystem::remove_all(dir);
  return exit_code;
}
