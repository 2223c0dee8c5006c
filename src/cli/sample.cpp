// ud2m sample: unconditional samples from a prior, as a grid PNG.
#include <ATen/CPUGeneratorImpl.h>

#include "cli/commands.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "core/log.hpp"
#include "core/panel.hpp"
#include "core/progress.hpp"
#include "diffusion/prior.hpp"
#include "samplers/ddim.hpp"

namespace ud2m::cli {
namespace {

struct SampleArgs {
  std::string model, out;
  int steps = 50, n = 16, size = 0;
  double eta = 0.0;
  uint64_t seed = 0;
};

void run_sample(const SampleArgs& args) {
  UD2M_CHECK(args.n > 0, "--n must be positive, not {}", args.n);
  auto prior = diffusion::load_prior(args.model);
  const int size = args.size > 0 ? args.size : prior->image_size();
  auto rng = at::make_generator<at::CPUGeneratorImpl>(args.seed);
  torch::Tensor x;
  {
    Progress progress("sample (ddim)", args.steps);
    x = samplers::sample_ddim(*prior, {args.n, prior->channels(), size, size}, args.steps, args.eta,
                              rng, [&](int, int, const torch::Tensor&) { progress.step(); });
  }
  write_png(args.out, make_grid(from_model(x).clamp(0, 1)));
  log::info("wrote {} samples to '{}'", args.n, args.out);
}

}  // namespace

void add_sample_command(CLI::App& app) {
  auto args = std::make_shared<SampleArgs>();
  auto* cmd = app.add_subcommand("sample", "Draw unconditional samples from a prior (DDIM) into a grid PNG.");
  cmd->add_option("--model", args->model, "Prior file (.safetensors written by ud2m)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--steps", args->steps, "DDIM steps (network evaluations)")->capture_default_str();
  cmd->add_option("--eta", args->eta, "DDIM η: 0 deterministic, 1 ancestral")->capture_default_str();
  cmd->add_option("--n", args->n, "Number of samples")->capture_default_str();
  cmd->add_option("--size", args->size, "Image size (default: the model's training size)");
  cmd->add_option("--seed", args->seed, "Seed")->capture_default_str();
  cmd->add_option("out", args->out, "Output grid PNG")->required();
  cmd->callback([args] { run_sample(*args); });
}

}  // namespace ud2m::cli
