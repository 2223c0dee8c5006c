// Options of the commands that run a prior (or an NCVSD generator), and the
// prior as their samplers call it. --precision fp32|bf16: bf16 weights and
// activations (GroupNorm in fp32), channels-last convolutions — ~1.9× faster
// on CPUs with AVX-512 bf16 (bench/adm_forward.py), ε within ~0.5% of fp32.
// --device: a GPU. --tile: large images in overlapping windows
// (diffusion/tiled_denoiser.hpp).
#pragma once
#include <CLI/CLI.hpp>

#include <memory>
#include <optional>
#include <string>

#include "core/device.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "diffusion/graphed_denoiser.hpp"
#include "diffusion/offloaded_denoiser.hpp"
#include "diffusion/padded_denoiser.hpp"
#include "diffusion/prior.hpp"
#include "diffusion/tiled_denoiser.hpp"
#include "ncvsd/networks.hpp"
#include "nets/inference_precision.hpp"

namespace ud2m::cli {

inline void add_precision_option(CLI::App& cmd, std::string& precision) {
  cmd.add_option("--precision", precision,
                 "Network arithmetic: fp32, or bf16 (ADM and DDPM priors, NCVSD generators; ~1.9x faster on CPUs "
                 "with AVX-512 bf16)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
}

// bf16 asked for where it is slow: said once, and the command goes on.
inline void warn_if_bf16_is_slow(const torch::Device& device, const std::string& option) {
  if (!has_fast_bf16(device))
    log::warn("{}: this CPU has no AVX-512, so PyTorch runs bf16 convolutions as reference loops, ~50x slower "
              "than fp32 here", option);
}

// The trainers' --bf16: autocast where bf16 is fast, unless told.
inline std::string bf16_help(const std::string& what) {
  return "bf16 autocast" + (what.empty() ? "" : " " + what) +
         " (true/false; default: true on GPUs and on CPUs with AVX-512, false elsewhere)";
}

inline bool resolve_bf16(const CLI::Option& option, bool value, const torch::Device& device) {
  if (option.count() == 0) return has_fast_bf16(device);
  if (value) warn_if_bf16_is_slow(device, "--bf16 true");
  return value;
}

// Call once the prior is final (after an adapter's LoRA is folded into it).
inline void apply_precision(diffusion::Prior& prior, const std::string& precision) {
  if (precision == "bf16") prior.set_inference_precision(torch::kBFloat16, /*channels_last=*/true);
}

inline void add_device_option(CLI::App& cmd, std::string& device,
                              const std::string& help = "cpu, or cuda / cuda:N: run the network (prior or NCVSD "
                                                        "generator) on that GPU (a prior's passes replayed from a "
                                                        "CUDA graph)") {
  // Checked while parsing, so a device this machine lacks fails before any model loads.
  const CLI::Validator usable_device(
      [](std::string& name) {
        try {
          parse_device(name);
          return std::string();
        } catch (const std::exception& e) {
          return std::string(e.what());
        }
      },
      "DEVICE");
  cmd.add_option("--device", device, help)
      ->check(usable_device)
      ->capture_default_str();
}

// --device, checked against --precision: bf16 where it is slow gets a warning.
inline torch::Device inference_device(const std::string& device_name, const std::string& precision) {
  const auto device = parse_device(device_name);
  if (precision == "bf16") warn_if_bf16_is_slow(device, "--precision bf16");
  // Every pass of a run has the same shapes: cuDNN times its algorithms on the
  // first and keeps the fastest (as bench/adm_forward does).
  if (device.is_cuda()) at::globalContext().setBenchmarkCuDNN(true);
  return device;
}

// Moves the prior to the device, then sets its precision; returns the device.
inline torch::Device place_prior(diffusion::Prior& prior, const std::string& device_name,
                                 const std::string& precision) {
  const auto device = inference_device(device_name, precision);
  prior.module().to(device);
  apply_precision(prior, precision);
  return device;
}

// Latent models only sample (their VAE turns latents into pixels); restoring
// and denoising work on pixels.
inline void check_pixel_model(const std::optional<nets::LatentSpace>& latent, const std::string& model,
                              const std::string& command) {
  UD2M_CHECK(!latent, "'{}' is a latent model (its samples are latents of the VAE '{}'): it works with `sample "
             "--vae DIR`, not `{}`, whose images and operators are pixels", model, latent ? latent->vae_name : "",
             command);
}

// The same for an NCVSD generator.
inline torch::Device place_generator(ncvsd::GeneratorNet& generator, const std::string& device_name,
                                     const std::string& precision) {
  const auto device = inference_device(device_name, precision);
  UD2M_CHECK(precision != "bf16" || generator->runs_in_weight_dtype(),
             "bf16 inference is implemented for ADM generators; this one is '{}' (use fp32)",
             generator->description().value("arch", "?"));
  generator->to(device);
  if (precision == "bf16") nets::cast_for_inference(*generator, torch::kBFloat16, /*channels_last=*/true);
  return device;
}

inline void add_tile_option(CLI::App& cmd, int& tile) {
  cmd.add_option("--tile", tile,
                 "Run the prior on overlapping tile x tile windows (overlap tile/8, blended) of images of more than "
                 "4 tile^2 pixels; default: twice the prior's training size (128 for the shipped prior); 0: the whole image at "
                 "once, whose attention layers cost grows with the square of its pixel count");
}

// --tile for a network trained at image_size whose sides must be multiples
// of `multiple`: none for 0, twice the training size by default (< 0).
inline std::optional<diffusion::Tiling> tiling_for(int tile, int image_size, int multiple) {
  if (tile < 0) tile = 2 * image_size;  // enough context for what the network learned
  UD2M_CHECK(tile == 0 || (tile % multiple == 0 && tile >= 8),
             "--tile must be 0 (off) or a multiple of {} (the network's down-sampling) of at least 8, not {}",
             multiple, tile);
  if (tile == 0) return std::nullopt;
  return diffusion::Tiling{tile, tile / 8};
}

// The prior as samplers call it: on its device (GPU passes replayed from a
// CUDA graph, the caller's tensors staying on the CPU), over tiles of images
// larger than `tile`, on inputs padded to the sides the network needs.
inline diffusion::DenoiserPtr prior_denoiser(const std::shared_ptr<diffusion::Prior>& prior, torch::Device device,
                                             int tile) {
  diffusion::DenoiserPtr denoiser = prior;
  if (device.is_cuda())
    denoiser = std::make_shared<diffusion::OffloadedDenoiser>(std::make_shared<diffusion::GraphedDenoiser>(prior),
                                                              device);
  if (auto tiling = tiling_for(tile, prior->image_size(), prior->size_multiple()))
    denoiser = std::make_shared<diffusion::TiledDenoiser>(denoiser, *tiling);
  return std::make_shared<diffusion::PaddedDenoiser>(denoiser, prior->size_multiple());
}

}  // namespace ud2m::cli
