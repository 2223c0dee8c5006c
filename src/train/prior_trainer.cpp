#include "train/prior_trainer.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <optional>

#include "core/atomic_file.hpp"
#include "core/device.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "core/log.hpp"
#include "core/panel.hpp"
#include "core/progress.hpp"
#include "core/random.hpp"
#include "nets/state_dict.hpp"
#include "train/adam_state.hpp"
#include "train/autocast.hpp"
#include "train/dropout_seed.hpp"
#include "train/ema.hpp"
#include "train/resume.hpp"
#include "train/step_profiler.hpp"
#include "train/time_limit.hpp"
#include "samplers/ddim.hpp"

namespace ud2m::train {
namespace fs = std::filesystem;

nlohmann::json PriorTrainOptions::to_json() const {
  return {{"data", data},       {"config", config},           {"crop", crop},
          {"batch", batch},     {"lr", lr},                   {"weight_decay", weight_decay},
          {"ema_decay", ema_decay}, {"grad_clip", grad_clip}, {"bf16", bf16},
          {"seed", seed},       {"save_every", save_every},   {"sample_every", sample_every},
          {"sample_steps", sample_steps}};
}

PriorTrainOptions PriorTrainOptions::from_json(const nlohmann::json& j) {
  PriorTrainOptions o;
  o.data = j.value("data", o.data);
  o.config = j.value("config", o.config);
  o.crop = j.value("crop", o.crop);
  o.batch = j.value("batch", o.batch);
  o.lr = j.value("lr", o.lr);
  o.weight_decay = j.value("weight_decay", o.weight_decay);
  o.ema_decay = j.value("ema_decay", o.ema_decay);
  o.grad_clip = j.value("grad_clip", o.grad_clip);
  o.bf16 = j.value("bf16", o.bf16);
  o.seed = j.value("seed", o.seed);
  o.save_every = j.value("save_every", o.save_every);
  o.sample_every = j.value("sample_every", o.sample_every);
  o.sample_steps = j.value("sample_steps", o.sample_steps);
  return o;
}

std::string PriorTrainer::checkpoint_path() const { return (fs::path(options_.out_dir) / "checkpoint.safetensors").string(); }

PriorTrainer::PriorTrainer(PriorTrainOptions options, std::shared_ptr<const CropDataset> data,
                           std::shared_ptr<dist::DistContext> dist)
    : options_(std::move(options)), data_(std::move(data)), dist_(std::move(dist)),
      device_(parse_device(options_.device)) {
  if (!dist_) dist_ = std::make_shared<dist::DistContext>();
  UD2M_CHECK(!options_.out_dir.empty(), "an output folder (--out) is required");
  UD2M_CHECK(options_.batch > 0 && options_.steps > 0, "batch and steps must be positive");
  fs::create_directories(options_.out_dir);
  const bool resume = resume_options(checkpoint_path(), "ud2m_train", "prior-training", options_);
  rank_batch_ = dist::rank_batch(options_.batch, dist_->world());
  if (!data_) data_ = std::make_shared<CropDataset>(list_images(options_.data), options_.crop);
  torch::manual_seed(options_.seed);  // weight initialisation
  auto config = nets::AdmConfig::preset(options_.config);
  model_ = std::make_shared<diffusion::AdmPrior>(config, diffusion::Schedule::linear());
  ema_ = std::make_shared<diffusion::AdmPrior>(config, diffusion::Schedule::linear());
  if (!options_.init.empty() && !resume) initialise_from(options_.init);
  model_->net()->to(device_);  // initialised on the CPU first: the same weights on any device
  ema_->net()->to(device_);
  // Rank 0's initial weights for all: equal seeds would do on one machine, but
  // not across different CPUs or library builds.
  dist_->broadcast(model_->net()->parameters());
  {
    torch::NoGradGuard no_grad;
    auto src = model_->net()->parameters();
    auto dst = ema_->net()->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  for (auto& p : ema_->net()->parameters()) p.set_requires_grad(false);
  optimizer_ = std::make_unique<FusedAdamW>(
      model_->net()->parameters(), torch::optim::AdamWOptions(options_.lr).weight_decay(options_.weight_decay));
  rng_ = at::make_generator<at::CPUGeneratorImpl>(options_.seed);
  if (resume) load_checkpoint(checkpoint_path());
  if (device_.is_cuda()) at::globalContext().setBenchmarkCuDNN(true);  // fixed shapes: pick the fastest kernels
  model_->net()->train();
}

float PriorTrainer::step() {
  const auto& schedule = model_->schedule();
  // Every rank draws the whole global batch (crops, times, noise) from the same
  // generator and keeps its own slice: the slices together are exactly what one
  // process draws, and the generators of all ranks stay equal, so rank 0's
  // checkpoint holds everyone's. Drawing crops is cheap next to the network.
  auto x0 = data_->batch(options_.batch, rng_);
  auto t = at::randint(schedule.steps(), {options_.batch}, rng_, torch::kLong);
  auto noise = gaussian(x0.sizes(), rng_, x0.options());
  x0 = dist_->share(x0, device_);
  noise = dist_->share(noise, device_);
  t = dist_->share(t);
  auto ab = schedule.alpha_bars().index_select(0, t).to(torch::kFloat32).view({-1, 1, 1, 1}).to(device_);
  t = t.to(device_);
  auto x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise;

  optimizer_->zero_grad();
  seed_dropout(options_.seed, step_, dist_->rank(), device_);
  torch::Tensor eps, loss;
  {
    Bf16Autocast autocast(device_.type(), options_.bf16);
    eps = model_->epsilon(x_t, t.to(torch::kFloat32));
  }
  loss = torch::mse_loss(eps.to(torch::kFloat32), noise);
  loss.backward();
  // Each rank's loss is the mean over its equal share, so the mean of the ranks'
  // gradients is the gradient of the global batch's mean loss; the loss itself
  // rides along in the same collective, for the log and the finiteness check.
  auto global_loss = loss.detach().reshape({1}).clone();
  dist_->average_gradients(model_->net()->parameters(), {global_loss});
  const float value = global_loss.item<float>();
  // After the reduction, so that every rank stops at the same step.
  UD2M_CHECK(std::isfinite(value), "the training loss became {} at step {}", value, step_);
  torch::nn::utils::clip_grad_norm_(model_->net()->parameters(), options_.grad_clip);
  optimizer_->step();
  update_ema(*ema_->net(), *model_->net(), options_.ema_decay, step_);
  ++step_;
  losses_.push_back(value);
  return value;
}

void PriorTrainer::save_checkpoint() {
  if (!dist_->is_main()) return;  // all ranks hold the same state
  TensorMap tensors;
  for (auto& [name, t] : nets::state_dict(*model_->net())) tensors["model." + name] = t;
  for (auto& [name, t] : nets::state_dict(*ema_->net())) tensors["ema." + name] = t;
  const int64_t adam_step = save_adam_state(*optimizer_, named(*model_->net()), "adam.", tensors);
  tensors["rng"] = rng_.get_state();
  tensors["loss"] = torch::tensor(losses_);
  nlohmann::json meta = {{"step", step_}, {"adam_step", adam_step}, {"options", options_.to_json()}};
  write_safetensors(checkpoint_path(), tensors, {{"ud2m_train", meta.dump()}});
  diffusion::save_prior((fs::path(options_.out_dir) / "prior.safetensors").string(), *ema_, torch::kBFloat16,
                        {{"training_step", std::to_string(step_)}});
  std::string csv = "step,loss_mean_over_50\n";
  for (size_t i = 0; i + 50 <= losses_.size(); i += 50) {
    double sum = 0;
    for (size_t k = i; k < i + 50; ++k) sum += losses_[k];
    csv += fmt::format("{},{:.6f}\n", i + 50, sum / 50);
  }
  write_file_atomic((fs::path(options_.out_dir) / "loss.csv").string(), csv);
}

void PriorTrainer::initialise_from(const std::string& path) {
  // Weights only (Adam starts afresh): how a run continues from a shipped
  // prior when its full checkpoint was left behind on another machine.
  auto weights = diffusion::load_prior(path);
  auto* adm = dynamic_cast<diffusion::AdmPrior*>(weights.get());
  UD2M_CHECK(adm, "--init '{}' is not an ADM prior", path);
  UD2M_CHECK(adm->net()->config().to_json() == model_->net()->config().to_json(),
             "--init '{}' has another network configuration than --config {}", path, options_.config);
  // The model only: the constructor then copies the model into the EMA.
  torch::NoGradGuard no_grad;
  auto src = adm->net()->parameters();
  auto dst = model_->net()->parameters();
  for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  log::info("initialised from '{}'", path);
}

void PriorTrainer::load_checkpoint(const std::string& path) {
  auto file = read_safetensors(path);
  auto meta = nlohmann::json::parse(file.metadata.at("ud2m_train"));
  TensorMap model, ema;
  for (auto& [name, t] : file.tensors) {
    if (name.rfind("model.", 0) == 0) model[name.substr(6)] = t;
    if (name.rfind("ema.", 0) == 0) ema[name.substr(4)] = t;
  }
  nets::load_state_dict(*model_->net(), model, path);
  nets::load_state_dict(*ema_->net(), ema, path);
  load_adam_state(*optimizer_, named(*model_->net()), "adam.", file.tensors, meta.at("adam_step"));
  rng_.set_state(file.tensors.at("rng"));  // (older checkpoints' "rng.global" is unused: see dropout_seed.hpp)
  auto loss = file.tensors.at("loss").contiguous();
  losses_.assign(loss.data_ptr<float>(), loss.data_ptr<float>() + loss.numel());
  step_ = meta.at("step");
  log::info("resumed from '{}' at step {}", path, step_);
}

void PriorTrainer::write_samples(const std::string& path) {
  // A separate generator keeps sampling from disturbing the training stream.
  auto rng = at::make_generator<at::CPUGeneratorImpl>(options_.seed + 1);
  const int64_t n = 16, size = options_.crop;
  auto x = samplers::sample_ddim(*ema_, {n, 3, size, size}, options_.sample_steps, 0.0, rng, {}, device_);
  write_png(path, make_grid(from_model(x.cpu()).clamp(0, 1)));
}

void PriorTrainer::run() {
  if (step_ >= options_.steps) {
    log::info("already trained for {} steps (target {})", step_, options_.steps);
    return;
  }
  const bool main = dist_->is_main();
  if (main)
    log::info("training {} ({} parameters) on {} photos ({} scaled copies), batch {} ({} processes × {}), "
              "from step {} to {}",
              options_.config, nets::count_parameters(*model_->net()), data_->photos(), data_->pyramid_images(),
              options_.batch, dist_->world(), rank_batch_, step_, options_.steps);
  std::optional<Progress> progress;
  if (main) progress.emplace("train-prior", static_cast<int>(options_.steps - step_));
  const TimeLimit time_limit(options_.max_seconds, *dist_, device_);
  StepProfiler profiler(main ? options_.profile : std::string(), device_);  // rank 0 speaks for all
  double recent = 0;
  while (step_ < options_.steps) {
    if (time_limit.reached()) {
      if (main) {
        log::info("stopping at step {}: the time limit of {} s is reached", step_, options_.max_seconds);
        save_checkpoint();
        if (options_.sample_every > 0) write_samples((fs::path(options_.out_dir) / "samples.png").string());
      }
      return;
    }
    profiler.before_step();
    const float loss = step();
    profiler.after_step();
    recent = step_ == 1 ? loss : 0.98 * recent + 0.02 * loss;
    if (!main) continue;  // rank 0 alone reports and writes files
    progress->step(fmt::format("step {} loss {:.4f}", step_, recent));
    if (step_ % options_.save_every == 0 || step_ == options_.steps) save_checkpoint();
    if (options_.sample_every > 0 && (step_ % options_.sample_every == 0 || step_ == options_.steps))
      write_samples((fs::path(options_.out_dir) / "samples.png").string());
  }
}

}  // namespace ud2m::train
