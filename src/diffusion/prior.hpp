// A diffusion prior on disk: a network + its noise schedule, stored as
// safetensors whose metadata names the architecture and its config, so
// `--model FILE` needs nothing else.
#pragma once
#include <string>

#include "diffusion/denoiser.hpp"
#include "io/safetensors.hpp"
#include "nets/adm_unet.hpp"

namespace ud2m::diffusion {

class AdmPrior : public Denoiser {
 public:
  AdmPrior(const nets::AdmConfig& config, Schedule schedule);
  torch::Tensor epsilon(const torch::Tensor& x_t, const torch::Tensor& t) override;
  const Schedule& schedule() const override { return schedule_; }
  nets::AdmUNet& net() { return net_; }
  // Model-file metadata describing this prior.
  nlohmann::json description() const;

 private:
  nets::AdmUNet net_;
  Schedule schedule_;
};

std::shared_ptr<AdmPrior> load_prior(const std::string& path);
// Weights stored in `dtype` (e.g. bf16 to halve the file); written atomically.
void save_prior(const std::string& path, AdmPrior& prior, torch::ScalarType dtype = torch::kFloat32,
                const Metadata& extra = {});

}  // namespace ud2m::diffusion
