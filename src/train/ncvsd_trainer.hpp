// NCVSD distillation: a generative denoiser G(y, σ, z) from a frozen prior
// (the teacher). Per step, two phases, each (as in the published loop) on its
// own batch of clean crops x, levels σ ~ LogNormal(0.4, 2.0) (clamped to
// [0.002, 80]) and y = x + σn:
//   fake score: denoising score matching on G's samples (drawn in eval mode,
//               no gradient), t ~ LogNormal(−0.8, 1.6), EDM weight, learned
//               log-variance;
//   generator:  the noise-conditional VSD loss (ncvsd/vsd.hpp) against the
//               teacher at (y_eff, σ_eff) and the fake score (in eval mode),
//               t ~ LogNormal(0.4, 2.0).
// Adam β = (0.9, 0.99) for both, the generator at a smaller rate (the fake
// score must keep up with it), EMA of the generator, atomic checkpoints, exact
// resume, a 2-step sample grid at each checkpoint. No adversarial term (the
// published runs switch theirs on only late in training). Data parallel as
// the UD2M trainer: every rank draws the whole batch (crops, levels, noise,
// the generator's z) from one stream, trains on its share, gradients averaged.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

#include "core/device.hpp"
#include "diffusion/prior.hpp"
#include "dist/context.hpp"
#include "ncvsd/networks.hpp"
#include "train/crop_dataset.hpp"
#include "train/fused_adamw.hpp"

namespace ud2m::train {

struct NcvsdTrainOptions {
  std::string teacher;  // prior file: any architecture (ADM, DDPM, EDM2)
  // Empty: the student and fake score start as copies of the teacher — ADM
  // teachers with two condition input channels, EDM2 teachers as NCVSD's own
  // network (EDM2 + ControlNet branch). Else an ADM preset (nets/adm_unet.hpp)
  // for a randomly initialised student — how DDPM teachers are distilled.
  std::string student_config;
  // A generator file (`generator.safetensors` of an earlier run) the student
  // and its EMA start from, so a distillation continues where only that file
  // survived (a GPU run's full checkpoint may be too large to keep); the fake
  // score starts afresh as usual. Ignored when resuming.
  std::string init_generator;
  std::string data;     // folder or list of photographs
  std::string out_dir;
  int crop = 64;
  int batch = 4;
  int steps = 1000;
  double lr = 1e-4;            // fake score
  double generator_lr = 2e-5;  // generator
  double ema_decay = 0.999;
  bool bf16 = has_fast_bf16(torch::kCPU);  // where bf16 is fast (the CLI: on its --device)
  uint64_t seed = 0;
  int save_every = 100;
  double max_seconds = 0;  // this invocation's time limit (not stored): stop with a checkpoint
  std::string profile;     // this invocation's (not stored): a trace of a few steps (train/step_profiler.hpp)
  std::string device = "cpu";  // this invocation's device (not stored): cpu, cuda or cuda:N

  nlohmann::json to_json() const;
  static NcvsdTrainOptions from_json(const nlohmann::json& j);
};

struct NcvsdLosses {
  float generator = 0, fake = 0;
};

class NcvsdTrainer {
 public:
  // With `dist` of W processes each rank trains on batch/W of every batch;
  // rank 0 alone writes files.
  explicit NcvsdTrainer(NcvsdTrainOptions options, std::shared_ptr<const CropDataset> data = nullptr,
                        std::shared_ptr<dist::DistContext> dist = nullptr);
  NcvsdLosses step();
  // checkpoint.safetensors, generator.safetensors (EMA, bf16), loss.csv, samples.png; each atomic.
  void save_checkpoint();
  void run();

  int64_t current_step() const { return step_; }
  ncvsd::GeneratorNet& generator() { return generator_; }
  ncvsd::GeneratorNet& ema() { return ema_; }
  ncvsd::GeneratorNet& fake_score() { return fake_; }
  std::string checkpoint_path() const;

 private:
  void load_checkpoint();
  void make_student();
  std::function<ncvsd::GeneratorNet()> student_maker();  // one new student network per call
  void start_from_generator(const std::string& path);  // generator, fake score and EMA, all equal

  NcvsdTrainOptions options_;
  torch::Device device_;
  std::shared_ptr<dist::DistContext> dist_;
  int rank_batch_ = 0;
  std::shared_ptr<const CropDataset> data_;
  diffusion::PriorPtr teacher_;
  ncvsd::GeneratorNet generator_{nullptr}, fake_{nullptr}, ema_{nullptr};
  ncvsd::LogVariance generator_logvar_{nullptr}, fake_logvar_{nullptr};
  std::unique_ptr<FusedAdamW> g_optimizer_, f_optimizer_;
  torch::Generator rng_;
  int64_t step_ = 0;
  std::vector<NcvsdLosses> history_;
};

}  // namespace ud2m::train
