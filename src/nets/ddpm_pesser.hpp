// The original DDPM checkpoints of Ho et al. in their PyTorch port by pesser
// ("pytorch_diffusion": diffusion_lsun_bedroom_model/model-2388000.ckpt,
// diffusion_cifar10_model/model-790000.ckpt, ...; the DDIM code reuses them):
// a plain state dict with names such as temb.dense.0.weight,
// down.0.block.0.conv1.weight, down.1.attn.0.q.weight, mid.attn_1.proj_out.weight,
// up.3.upsample.conv.weight. They load into DdpmUNet (diffusers' layout) by
// renaming; the configuration comes from the tensor shapes.
#pragma once
#include <string>

#include "io/safetensors.hpp"
#include "nets/ddpm_unet.hpp"

namespace ud2m::nets {

// True when the weights carry pytorch_diffusion's names.
bool has_pesser_ddpm_names(const TensorMap& weights);

// The DdpmConfig of such weights: channels per level, residual blocks per level
// and attention levels from the shapes; Ho et al.'s fixed conventions otherwise
// (GroupNorm(32, eps 1e-6), one attention head, [sin, cos] time embedding with
// shift 1, stride-2 downsampling after (0,1,0,1) padding). The training
// resolution is not in the weights. Throws Error naming `source` when the
// names and shapes fit no such U-Net.
DdpmConfig infer_pesser_ddpm_config(const TensorMap& weights, const std::string& source);

// The pytorch_diffusion name of one DdpmUNet tensor. `levels` is the number of
// resolutions: pytorch_diffusion numbers its up levels by resolution (up.0 is
// the finest), diffusers in execution order (up_blocks.0 is the coarsest).
std::string pesser_ddpm_name(const std::string& diffusers_name, int levels);

// Copies pytorch_diffusion weights into `net`, a DdpmUNet built from
// `config`; the 1×1-convolution attention projections become linear weights.
// Errors use the file's own tensor names.
void load_pesser_ddpm(torch::nn::Module& net, const DdpmConfig& config, const TensorMap& weights,
                      const std::string& source);

// One line for messages and `ud2m info`: "channels 128,128,256,256,512,512 with 2 residual blocks per
// level, attention at level 4, 3 -> 3 image channels".
std::string describe_ddpm_config(const DdpmConfig& config);

}  // namespace ud2m::nets
