// Training a diffusion prior: ε-prediction loss on random crops, AdamW, EMA
// weights, bf16 autocast, atomic checkpoints and exact resume; data parallel
// over the ranks of a dist::DistContext (one process by default).
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "diffusion/prior.hpp"
#include "dist/context.hpp"
#include "train/crop_dataset.hpp"
#include "train/fused_adamw.hpp"

namespace ud2m::train {

struct PriorTrainOptions {
  std::string data;  // folder or list file of photographs
  std::string out_dir;
  std::string config = "ud2m-small-64";  // ADM preset name
  int crop = 64;
  int batch = 32;  // the global batch: each of W ranks trains on batch/W samples
  int steps = 100000;  // total optimisation steps (resume continues towards it)
  double lr = 2e-4;
  double weight_decay = 0.0;
  double ema_decay = 0.999;
  double grad_clip = 1.0;
  bool bf16 = has_fast_bf16(torch::kCPU);  // autocast matmuls/convolutions to bf16 (fp32 master weights)
  std::string device = "cpu";  // "cpu" or "cuda[:i]"; not saved: a resumed run may move
  std::string init;            // start a fresh run from these weights (a prior file of the same config)
  double max_seconds = 0;      // stop (checkpoint, samples) after this wall time; 0: no limit
  std::string profile;         // this invocation's: a trace of a few steps (train/step_profiler.hpp)
  uint64_t seed = 0;
  int save_every = 250;
  int sample_every = 2000;  // sample grid PNG (0: never)
  int sample_steps = 50;

  nlohmann::json to_json() const;
  static PriorTrainOptions from_json(const nlohmann::json& j);
};

class PriorTrainer {
 public:
  // Starts fresh, or resumes from out_dir/checkpoint.safetensors when present
  // (the options saved there win over `options`, except steps and out_dir).
  // With several ranks, every rank constructs one with the same options; they
  // start from rank 0's initial weights and resume from the same checkpoint.
  explicit PriorTrainer(PriorTrainOptions options, std::shared_ptr<const CropDataset> data = nullptr,
                        std::shared_ptr<dist::DistContext> dist = nullptr);

  float step();            // one optimisation step; returns its loss (the mean over all ranks)
  void save_checkpoint();  // rank 0 only, atomic: checkpoint.safetensors + prior.safetensors (EMA, bf16)
  void write_samples(const std::string& path);
  void run();              // steps until options.steps; rank 0 shows progress, saves checkpoints, samples

  int64_t current_step() const { return step_; }
  diffusion::AdmPrior& model() { return *model_; }
  diffusion::AdmPrior& ema() { return *ema_; }
  std::string checkpoint_path() const;

 private:
  void load_checkpoint(const std::string& path);
  void initialise_from(const std::string& path);

  PriorTrainOptions options_;
  std::shared_ptr<const CropDataset> data_;
  std::shared_ptr<dist::DistContext> dist_;
  int rank_batch_ = 0;
  std::shared_ptr<diffusion::AdmPrior> model_, ema_;
  std::unique_ptr<FusedAdamW> optimizer_;
  torch::Device device_;
  torch::Generator rng_;  // on the CPU whatever the device: crops are cut there, and resumes are exact across devices
  int64_t step_ = 0;
  std::vector<float> losses_;
};

}  // namespace ud2m::train
