// UD2M distillation: the unrolled network's LoRA factors, output head, λ and ρ
// trained against a conditional discriminator. Per step (one t per batch, one
// operator per batch):
//   G: BCE(D(x̂0, y↑) → real) + ω_ℓ2·‖ε̂ − ε‖² + ω_PS·perceptual(x̂0, x)
//   D: BCE(D(x, y↑) → real) + BCE(D(x̂0, y↑) → fake) + ω_GP·E‖∇D(x̃)‖² (zero-centred, x̃ between them)
// AdamW (lr 1e-4, weight decay 0.01) for both; atomic checkpoints; exact resume.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "core/device.hpp"
#include "dist/context.hpp"
#include "nets/discriminator.hpp"
#include "physics/degradation.hpp"
#include "train/crop_dataset.hpp"
#include "train/fused_adamw.hpp"
#include "train/perceptual_loss.hpp"
#include "ud2m/unrolled.hpp"

namespace ud2m::train {

struct Ud2mTrainOptions {
  std::string prior;  // base prior file
  std::string data;   // folder or list of photographs
  std::string out_dir;
  std::string task = "gaussian_deblur";  // a degrade task, or "general" (a random operator per batch)
  // The task's options, as `degrade` takes them (e.g. {"matrix": FILE}, {"kernel-std": "2"}); not for general.
  std::map<std::string, std::string> task_options;
  double sigma = 0.01;                   // measurement noise, [0, 1] units
  int crop = 64;
  int batch = 2;
  int steps = 1000;
  int blocks = 3;        // K
  int sample_steps = 3;  // N the adapter is meant for
  nets::LoraOptions lora;
  double noise_inflation = 1;  // c of the re-noising level ρ₀ (see unrolled.hpp)
  bool learned_init = false;   // the "w/ RAM" variant: a learned initialiser trained jointly
  // Start from this adapter's weights (fine-tuning, or continuing a run whose
  // checkpoint is gone); its K, LoRA and initialiser settings replace the above,
  // except K when blocks_given (the blocks share their weights, so an adapter
  // runs at any K: training on at a larger K is a fine-tune of the same file).
  std::string init_adapter;
  bool blocks_given = false;
  double lr = 1e-4, weight_decay = 0.01;
  // The learned log λ and log ρ scale: two numbers that set how far each block
  // moves towards the data. At lr they crawl (±0.02 in 1,000 steps) while the
  // best values for Gaussian deblurring lie ~1 away (+2.4 dB measured), so
  // they get their own rate, without weight decay.
  double scalar_lr = 1e-2;
  double w_adv = 1.0, w_l2 = 1.0, w_perceptual = 0.1, w_gp = 10.0;
  std::string val_data;  // photos for the validation PSNR (default: the training photos)
  int val_images = 8;
  int val_every = 0;     // steps between validations (0: at every checkpoint)
  // Settings of this invocation, like the step target: not stored, not
  // restored on resume. Recompute the prior calls in the backward pass
  // (activation memory ÷ ~K); stop with a checkpoint after max_seconds (0: no
  // limit); the device (draws are made on the CPU either way, so a run may
  // change device when it resumes).
  bool recompute = false;
  double max_seconds = 0;
  std::string profile;  // a trace of a few steps (train/step_profiler.hpp)
  std::string device = "cpu";  // cpu, cuda or cuda:N: where the networks, operators and losses run
  bool bf16 = has_fast_bf16(torch::kCPU);  // autocast the networks to bf16 (fp32 weights, prox and losses)
  uint64_t seed = 0;
  int save_every = 100;

  nlohmann::json to_json() const;
  static Ud2mTrainOptions from_json(const nlohmann::json& j);
};

// The tasks the "general" mode draws from (as published).
const std::vector<std::string>& general_tasks();

struct Ud2mLosses {
  float generator = 0, l2 = 0, adversarial = 0, perceptual = 0, discriminator = 0;
};


class Ud2mTrainer {
 public:
  // With `dist` of W processes each rank trains on batch/W of every batch
  // (all ranks draw the whole batch from the same stream and keep their share)
  // and gradients are averaged; rank 0 alone validates and writes files.
  explicit Ud2mTrainer(Ud2mTrainOptions options, PerceptualLoss perceptual = {},
                       std::shared_ptr<const CropDataset> data = nullptr,
                       std::shared_ptr<dist::DistContext> dist = nullptr);
  Ud2mLosses step();
  // MSE of x̂0 against the clean crops on fixed draws (same crops, operators,
  // t and noise each call). The training loss's ε-MSE is dominated by the
  // smallest t (÷(1−ᾱ_t)), so x̂0's error is the steadier yardstick.
  double validation_mse(int batches = 4);
  // Mean PSNR (dB) of the full sampler (N = sample_steps) on a fixed set of
  // val_images crops of the validation photos, each with its own operator.
  double validation_psnr();
  void save_checkpoint();  // checkpoint.safetensors + adapter.safetensors + loss.csv, each atomic
  void run();

  int64_t current_step() const { return step_; }
  unrolled::UnrolledNetwork& network() { return *network_; }
  std::string checkpoint_path() const;

 private:
  // Clean crops, an operator (the task's, or a random one in general mode) and
  // its noisy measurement, all drawn from `rng`.
  struct Example {
    torch::Tensor x, y;
    physics::Degradation degradation;
    const physics::Operator& op() const { return *degradation.op; }
  };
  struct Noised {
    int t;
    double alpha_bar;
    torch::Tensor eps, x_t;
  };
  void load_checkpoint();
  physics::Degradation draw_degradation(torch::Generator& rng, int batch) const;
  Example draw_example(const CropDataset& images, torch::Generator& rng, int batch) const;
  Noised noise_to_random_time(const torch::Tensor& x, torch::Generator& rng) const;

  Ud2mTrainOptions options_;
  torch::Device device_;
  PerceptualLoss perceptual_;
  std::shared_ptr<dist::DistContext> dist_;
  int rank_batch_ = 0;
  std::shared_ptr<const CropDataset> data_, val_data_;
  std::vector<Example> validation_set_;
  std::vector<std::pair<int64_t, double>> validation_history_;  // (step, PSNR)
  std::shared_ptr<unrolled::UnrolledNetwork> network_;
  nets::Discriminator discriminator_{nullptr};
  std::unique_ptr<FusedAdamW> g_optimizer_, d_optimizer_;
  torch::Generator rng_;
  int64_t step_ = 0;
  std::vector<Ud2mLosses> history_;
};

}  // namespace ud2m::train
