// Recovers the ADM configuration of a guided-diffusion state dict from its
// tensor names and shapes, so original checkpoints load by path alone.
#pragma once
#include "io/safetensors.hpp"
#include "nets/adm_unet.hpp"

namespace ud2m::nets {

// Weights hold no head count or training resolution: those come from the
// arguments (64 head channels and 256 px for every published ADM model).
AdmConfig infer_adm_config(const TensorMap& weights, const std::string& source, int num_head_channels = 64,
                           int image_size = 256);

}  // namespace ud2m::nets
