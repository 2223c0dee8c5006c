// ud2m sample: unconditional samples from a prior (DDIM) or an NCVSD generator (1, 2 or 4 steps), as a grid PNG.
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <filesystem>

#include "cli/commands.hpp"
#include "cli/prior_options.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "core/log.hpp"
#include "core/panel.hpp"
#include "core/progress.hpp"
#include "diffusion/graphed_denoiser.hpp"
#include "diffusion/prior.hpp"
#include "ncvsd/generation.hpp"
#include "samplers/ddim.hpp"

namespace ud2m::cli {
namespace {

struct SampleArgs {
  std::string model, out, out_dir, method = "ddim", vae;
  int steps = 50, n = 16, size = 0, class_label = -1;
  std::vector<int> indices;  // NCVSD: level indices on the 40-level grid (overrides --steps)
  double eta = 0.0;
  uint64_t seed = 0;
  std::string precision = "fp32", device = "cpu";
};

// Turns a model's samples into pixels in [0, 1]: a latent model's through its
// VAE, loaded before sampling so that a missing one fails at once.
class ToPixels {
 public:
  ToPixels(const SampleArgs& args, std::optional<nets::LatentSpace> latent, torch::Device device)
      : latent_(std::move(latent)) {
    if (!latent_) {
      UD2M_CHECK(args.vae.empty(), "--vae is for latent models; '{}' works in pixels", args.model);
      return;
    }
    UD2M_CHECK(!args.vae.empty(), "'{}' samples latents of the VAE '{}': give that VAE's diffusers folder with "
               "--vae DIR", args.model, latent_->vae_name);
    vae_ = nets::load_vae_decoder(args.vae);
    vae_->to(device);  // the samples are decoded where they were drawn
  }
  torch::Tensor operator()(const torch::Tensor& x) {
    return latent_ ? latent_->decode(vae_, x).cpu() : from_model(x.cpu()).clamp(0, 1);
  }

 private:
  std::optional<nets::LatentSpace> latent_;
  nets::VaeDecoder vae_{nullptr};
};

// A class-conditional model told no class samples a random one per image, as
// EDM2's and NCVSD's generate_images do (the zero label vector is no class).
void draw_classes(nets::Edm2Classes& classes, int64_t n, torch::Generator& rng) {
  if (classes.label_dim == 0 || classes.fixed >= 0) return;
  auto drawn = torch::randint(classes.label_dim, {n}, rng, torch::kLong);
  classes.per_row.assign(drawn.data_ptr<int64_t>(), drawn.data_ptr<int64_t>() + n);
  log::info("one class per sample, drawn at random (--class N picks one): {}", fmt::join(classes.per_row, ", "));
}

// The grid, and with --out-dir each sample as its own PNG (for FID-style set metrics).
void write_samples(const SampleArgs& args, const torch::Tensor& images, double seconds) {
  write_png(args.out, make_grid(images));
  if (!args.out_dir.empty()) {
    std::filesystem::create_directories(args.out_dir);
    for (int64_t i = 0; i < images.size(0); ++i)
      write_png((std::filesystem::path(args.out_dir) / fmt::format("{:05d}.png", i)).string(), images[i]);
  }
  log::info("wrote {} samples to '{}'{} ({:.3f} s per sample)", args.n, args.out,
            args.out_dir.empty() ? "" : " and '" + args.out_dir + "'", seconds / args.n);
}

void run_sample(const SampleArgs& args) {
  UD2M_CHECK(args.n > 0, "--n must be positive, not {}", args.n);
  const auto start = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  if (args.method == "ncvsd") {
    auto generator = ncvsd::load_generator(args.model, args.class_label);
    const auto device = place_generator(generator, args.device, args.precision);
    UD2M_CHECK(args.size > 0, "--size is required with --method ncvsd (the generator works at any multiple of 32)");
    ToPixels to_pixels(args, generator->latent_space(), device);
    auto rng = at::make_generator<at::CPUGeneratorImpl>(args.seed);
    if (auto* published = dynamic_cast<ncvsd::Edm2GeneratorImpl*>(generator.get()))
      draw_classes(published->classes(), args.n, rng);
    torch::NoGradGuard no_grad;
    auto indices = args.indices.empty() ? ncvsd::default_indices(args.steps, *generator) : args.indices;
    auto x =
        ncvsd::generate_images(*generator, {args.n, generator->channels(), args.size, args.size}, indices, rng, device);
    write_samples(args, to_pixels(x), seconds());
    return;
  }
  diffusion::LoadOptions load;
  load.class_label = args.class_label;
  auto prior = diffusion::load_prior(args.model, load);
  const auto device = place_prior(*prior, args.device, args.precision);
  ToPixels to_pixels(args, prior->latent_space(), device);
  diffusion::GraphedDenoiser denoiser(prior);  // on the CPU it calls the prior directly
  const int size = args.size > 0 ? args.size : prior->image_size();
  auto rng = at::make_generator<at::CPUGeneratorImpl>(args.seed);
  if (auto edm2 = std::dynamic_pointer_cast<diffusion::Edm2Prior>(prior)) draw_classes(edm2->classes(), args.n, rng);
  torch::Tensor x;
  {
    Progress progress("sample (ddim)", args.steps);
    x = samplers::sample_ddim(denoiser, {args.n, prior->channels(), size, size}, args.steps, args.eta,
                              rng, [&](int, int, const torch::Tensor&) { progress.step(); }, device,
                              /*clip_x0=*/!prior->latent_space());
  }
  write_samples(args, to_pixels(x), seconds());
}

}  // namespace

void add_sample_command(CLI::App& app) {
  auto args = std::make_shared<SampleArgs>();
  auto* cmd = app.add_subcommand(
      "sample", "Draw unconditional samples from a prior (DDIM) or an NCVSD generator into a grid PNG.");
  cmd->add_option("--model", args->model, "Prior file, or an NCVSD generator for --method ncvsd")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--method", args->method, "ddim (a prior) or ncvsd (a generator from `train --method ncvsd`, or NCVSD's own .pkl)")
      ->capture_default_str()
      ->check(CLI::IsMember({"ddim", "ncvsd"}));
  cmd->add_option("--steps", args->steps,
                  "DDIM steps (network evaluations); NCVSD: 1, 2 or 4 on the published level sets, or any step "
                  "count the generator file has its own set for (`convert --levels`)")
      ->capture_default_str();
  cmd->add_option("--indices", args->indices,
                  "NCVSD: level indices on the 40-level grid (σ 80 → 0.002), increasing, the last one only ending "
                  "the grid; e.g. 0,10,20,30,39 (the published 4-step set). Overrides --steps")
      ->delimiter(',');
  cmd->add_option("--class", args->class_label,
                  "Class-conditional models (EDM2 ImageNet priors, NCVSD ImageNet generators): the class to sample (-1: "
                  "the file's own, or one drawn at random per sample)");
  cmd->add_option("--eta", args->eta, "DDIM η: 0 deterministic, 1 ancestral")->capture_default_str();
  cmd->add_option("--n", args->n, "Number of samples")->capture_default_str();
  cmd->add_option("--size", args->size, "Image size (default: the model's training size; latent models: in latent "
                                       "pixels, 1/8 of the image's side)");
  cmd->add_option("--vae", args->vae, "Latent models (EDM2 ImageNet-512 and the NCVSD generators distilled from "
                                      "them): the diffusers folder of the VAE they name (stabilityai/sd-vae-ft-mse), "
                                      "which turns their latents into pixels");
  cmd->add_option("--seed", args->seed, "Seed")->capture_default_str();
  add_precision_option(*cmd, args->precision);
  add_device_option(*cmd, args->device);
  cmd->add_option("out", args->out, "Output grid PNG")->required();
  cmd->add_option("--out-dir", args->out_dir, "Also write each sample as its own PNG into this folder (00000.png, ...)");
  cmd->callback([args] { run_sample(*args); });
}

}  // namespace ud2m::cli
