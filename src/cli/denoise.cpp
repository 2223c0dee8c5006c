// ud2m denoise: one call of the prior's x0 estimate at the noise level σ —
// what deepinv users do with DiffUNet as a plain denoiser.
#include <cmath>

#include "cli/commands.hpp"
#include "cli/prior_options.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "core/log.hpp"
#include "diffusion/prior.hpp"

namespace ud2m::cli {
namespace {

struct DenoiseArgs {
  std::string model, in, out;
  double sigma = -1;
  int bit_depth = 8;
  std::string precision = "fp32", device = "cpu";
  int tile = -1;  // twice the prior's training size
};

void run_denoise(const DenoiseArgs& args) {
  UD2M_CHECK(args.sigma > 0, "--sigma must be positive (noise std in [0,1] units), not {}", args.sigma);
  auto prior = diffusion::load_prior(args.model);
  check_pixel_model(prior->latent_space(), args.model, "denoise");
  const auto device = place_prior(*prior, args.device, args.precision);
  auto image = read_image(args.in, prior->channels());
  torch::NoGradGuard no_grad;
  auto x0 = prior_denoiser(prior, device, args.tile)->denoise(to_model(image), 2.0 * args.sigma);
  write_png(args.out, from_model(x0).clamp(0, 1), args.bit_depth);
  log::info("denoised '{}' at sigma {} (timestep {}) -> '{}'", args.in, args.sigma,
            prior->schedule().timestep_for_sigma(2.0 * args.sigma), args.out);
}

}  // namespace

void add_denoise_command(CLI::App& app) {
  auto args = std::make_shared<DenoiseArgs>();
  auto* cmd = app.add_subcommand("denoise", "Denoise an image with a prior's one-call x0 estimate at noise level sigma.");
  cmd->add_option("--model", args->model, "Prior file (.safetensors written by ud2m)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--sigma", args->sigma, "Noise std in [0,1] image units")->required();
  add_precision_option(*cmd, args->precision);
  add_device_option(*cmd, args->device);
  add_tile_option(*cmd, args->tile);
  cmd->add_option("--bit-depth", args->bit_depth, "Output PNG bit depth: 8 or 16")
      ->check(CLI::IsMember({8, 16}))
      ->capture_default_str();
  cmd->add_option("in", args->in, "Noisy image (PNG/JPEG)")->required()->check(CLI::ExistingFile);
  cmd->add_option("out", args->out, "Denoised PNG")->required();
  cmd->callback([args] { run_denoise(*args); });
}

}  // namespace ud2m::cli
