// --precision fp32|bf16 for the commands that run a prior: bf16 weights and
// activations (GroupNorm in fp32), channels-last convolutions — ~1.9× faster
// on CPUs with AVX-512 bf16 (bench/adm_forward.py), ε within ~0.5% of fp32.
// --device for the commands that can run it on a GPU.
#pragma once
#include <CLI/CLI.hpp>

#include <string>

#include "core/device.hpp"
#include "diffusion/prior.hpp"

namespace ud2m::cli {

inline void add_precision_option(CLI::App& cmd, std::string& precision) {
  cmd.add_option("--precision", precision,
                 "Network arithmetic: fp32, or bf16 (ADM and DDPM priors; ~1.9x faster on CPUs with AVX-512 bf16)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
}

// Call once the prior is final (after an adapter's LoRA is folded into it).
inline void apply_precision(diffusion::Prior& prior, const std::string& precision) {
  if (precision == "bf16") prior.set_inference_precision(torch::kBFloat16, /*channels_last=*/true);
}

inline void add_device_option(CLI::App& cmd, std::string& device) {
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
  cmd.add_option("--device", device,
                 "cpu, or cuda / cuda:N: run the prior on that GPU (its passes replayed from a CUDA graph)")
      ->check(usable_device)
      ->capture_default_str();
}

// Moves the prior to the device, then sets its precision; returns the device.
inline torch::Device place_prior(diffusion::Prior& prior, const std::string& device_name,
                                 const std::string& precision) {
  const auto device = parse_device(device_name);
  prior.module().to(device);
  apply_precision(prior, precision);
  return device;
}

}  // namespace ud2m::cli
