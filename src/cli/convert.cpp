// ud2m convert: any prior ud2m can load -> one self-describing safetensors file;
// a UD2M adapter -> the same adapter with another default N steps × K blocks.
#include "cli/commands.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "diffusion/prior.hpp"
#include "ncvsd/generation.hpp"
#include "nets/adm_unet.hpp"
#include "ud2m/adapter.hpp"

namespace ud2m::cli {
namespace {

struct ConvertArgs {
  std::string in, out, dtype = "fp32";
  diffusion::LoadOptions load;
  std::optional<int> steps, blocks;  // adapters only
  std::vector<std::string> levels;   // NCVSD generators only
};

void run_convert(const ConvertArgs& args) {
  if (unrolled::is_adapter_file(args.in)) {
    const auto adapter = unrolled::write_with_default_unroll(args.in, args.out, args.steps, args.blocks);
    log::info("wrote '{}': UD2M adapter for {}, restoring with N = {} steps x K = {} blocks by default", args.out,
              adapter.info.task, adapter.info.steps, adapter.options.blocks);
    return;
  }
  UD2M_CHECK(!args.steps && !args.blocks, "--steps and --blocks apply to UD2M adapters; '{}' is not one", args.in);
  const bool generator_file = ncvsd::is_generator_file(args.in);
  UD2M_CHECK(args.levels.empty() || generator_file, "--levels applies to NCVSD generators; '{}' is not one", args.in);
  const torch::ScalarType dtype = args.dtype == "bf16" ? torch::kBFloat16
                                  : args.dtype == "fp16" ? torch::kFloat16
                                                         : torch::kFloat32;
  if (generator_file) {
    auto generator = ncvsd::load_generator(args.in, args.load.class_label);
    for (const auto& text : args.levels) {
      auto [steps, indices] = ncvsd::parse_level_set(text);
      generator->level_sets[steps] = indices;
    }
    auto notes = ncvsd::generator_file_notes(args.in);  // its training provenance stays with it
    notes["converted_from"] = args.in;
    ncvsd::save_generator(args.out, *generator, notes, dtype);
    std::vector<int> own;
    for (const auto& set : generator->level_sets) own.push_back(set.first);
    log::info("wrote '{}': NCVSD generator, {} ({} parameters, {}){}", args.out,
              generator->description().value("arch", ""), nets::count_parameters(*generator), args.dtype,
              own.empty() ? "" : fmt::format(", with its own level sets for {} steps", fmt::join(own, ", ")));
    return;
  }
  auto prior = diffusion::load_prior(args.in, args.load);
  diffusion::save_prior(args.out, *prior, dtype, {{"converted_from", args.in}});
  log::info("wrote '{}': {} ({} parameters, {})", args.out, prior->description().value("arch", ""),
            nets::count_parameters(prior->module()), args.dtype);
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto args = std::make_shared<ConvertArgs>();
  auto* cmd = app.add_subcommand(
      "convert",
      "Convert a prior (guided-diffusion .pt, pytorch_diffusion DDPM .ckpt, Lightning .ckpt, diffusers folder or\n"
      ".bin/.safetensors, EDM2 network pickle .pkl) or an NCVSD generator (NCVSD's network pickle .pkl) into a\n"
      "ud2m .safetensors file that names its architecture, so\n"
      "--model needs nothing else. Pickles are read as data: no code from them runs. Given a UD2M adapter, writes\n"
      "it with --steps N / --blocks K as the setting `restore` uses when it is not told.");
  cmd->add_option("in", args->in, "Original checkpoint file or diffusers model folder")->required()->check(CLI::ExistingPath);
  cmd->add_option("out", args->out, "Output .safetensors")->required();
  cmd->add_option("--dtype", args->dtype, "Storage dtype of the weights")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();
  cmd->add_option("--head-channels", args->load.num_head_channels,
                  "ADM attention head channels (not stored in the weights)")->capture_default_str();
  cmd->add_option("--image-size", args->load.image_size,
                  "Training resolution of an original ADM or DDPM checkpoint (not stored in the weights; DDPM "
                  "CIFAR-10: 32)")
      ->capture_default_str();
  cmd->add_option("--class", args->load.class_label,
                  "Class-conditional models (EDM2 ImageNet priors, NCVSD generators): the class the model samples, stored "
                  "in the file; -1: "
                  "none (EDM2's zero label vector)")
      ->capture_default_str();
  cmd->add_option("--steps", args->steps, "UD2M adapters: default sampling steps N");
  cmd->add_option("--blocks", args->blocks, "UD2M adapters: default unrolled blocks K (they share their weights)");
  cmd->add_option("--levels", args->levels,
                  "NCVSD generators: STEPS:I0,I1,... stores the level indices (on the 40-level grid, σ 80 -> 0.002) "
                  "that `sample --method ncvsd --steps STEPS` uses for this generator instead of the published set; "
                  "repeat for several step counts, e.g. --levels 4:0,14,22,30,39 --levels 1:18,39");
  cmd->callback([args] { run_convert(*args); });
}

}  // namespace ud2m::cli
