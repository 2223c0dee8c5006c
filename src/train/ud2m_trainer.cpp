#include "train/ud2m_trainer.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <filesystem>
#include <optional>

#include "core/atomic_file.hpp"
#include "core/device.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "core/log.hpp"
#include "core/progress.hpp"
#include "core/random.hpp"
#include "diffusion/prior.hpp"
#include "metrics/metrics.hpp"
#include "nets/state_dict.hpp"
#include "physics/degradation.hpp"
#include "train/adam_state.hpp"
#include "train/autocast.hpp"
#include "train/resume.hpp"
#include "train/step_profiler.hpp"
#include "train/time_limit.hpp"
#include "ud2m/adapter.hpp"
#include "ud2m/sampler.hpp"

namespace ud2m::train {
namespace fs = std::filesystem;

nlohmann::json Ud2mTrainOptions::to_json() const {
  return {{"prior", prior},   {"data", data},       {"task", task},         {"task_options", task_options},
          {"sigma", sigma},
          {"crop", crop},     {"batch", batch},     {"blocks", blocks},     {"sample_steps", sample_steps},
          {"lora_rank", lora.rank}, {"lora_alpha", lora.alpha}, {"lora_placement", lora.placement},
          {"noise_inflation", noise_inflation}, {"learned_init", learned_init},
          {"init_adapter", init_adapter}, {"lr", lr}, {"scalar_lr", scalar_lr}, {"weight_decay", weight_decay},
          {"w_adv", w_adv},   {"w_l2", w_l2},       {"w_perceptual", w_perceptual}, {"w_gp", w_gp},
          {"val_data", val_data}, {"val_images", val_images}, {"val_every", val_every},
          {"bf16", bf16},     {"seed", seed},       {"save_every", save_every}};
}

Ud2mTrainOptions Ud2mTrainOptions::from_json(const nlohmann::json& j) {
  Ud2mTrainOptions o;
  o.prior = j.value("prior", o.prior);
  o.data = j.value("data", o.data);
  o.task = j.value("task", o.task);
  o.task_options = j.value("task_options", o.task_options);
  o.sigma = j.value("sigma", o.sigma);
  o.crop = j.value("crop", o.crop);
  o.batch = j.value("batch", o.batch);
  o.blocks = j.value("blocks", o.blocks);
  o.sample_steps = j.value("sample_steps", o.sample_steps);
  o.lora.rank = j.value("lora_rank", o.lora.rank);
  o.lora.alpha = j.value("lora_alpha", o.lora.alpha);
  o.lora.placement = j.value("lora_placement", o.lora.placement);
  o.noise_inflation = j.value("noise_inflation", o.noise_inflation);
  o.learned_init = j.value("learned_init", o.learned_init);
  o.init_adapter = j.value("init_adapter", o.init_adapter);
  o.lr = j.value("lr", o.lr);
  o.scalar_lr = j.value("scalar_lr", o.lr);  // runs from before the option used one rate
  o.weight_decay = j.value("weight_decay", o.weight_decay);
  o.w_adv = j.value("w_adv", o.w_adv);
  o.w_l2 = j.value("w_l2", o.w_l2);
  o.w_perceptual = j.value("w_perceptual", o.w_perceptual);
  o.w_gp = j.value("w_gp", o.w_gp);
  o.val_data = j.value("val_data", o.val_data);
  o.val_images = j.value("val_images", o.val_images);
  o.val_every = j.value("val_every", o.val_every);
  o.bf16 = j.value("bf16", false);  // runs from before the option trained in fp32
  o.seed = j.value("seed", o.seed);
  o.save_every = j.value("save_every", o.save_every);
  return o;
}

const std::vector<std::string>& general_tasks() {
  static const std::vector<std::string> tasks = {"gaussian_deblur", "uniform_deblur", "motion_deblur", "sr",
                                                 "inpainting_random"};
  return tasks;
}

std::string Ud2mTrainer::checkpoint_path() const {
  return (fs::path(options_.out_dir) / "checkpoint.safetensors").string();
}

Ud2mTrainer::Ud2mTrainer(Ud2mTrainOptions options, PerceptualLoss perceptual, std::shared_ptr<const CropDataset> data,
                         std::shared_ptr<dist::DistContext> dist)
    : options_(std::move(options)),
      device_(parse_device(options_.device)),
      perceptual_(std::move(perceptual)),
      dist_(std::move(dist)),
      data_(std::move(data)) {
  if (!dist_) dist_ = std::make_shared<dist::DistContext>();
  UD2M_CHECK(!options_.out_dir.empty(), "an output folder (--out) is required");
  UD2M_CHECK(options_.batch > 0 && options_.steps > 0, "batch and steps must be positive");
  UD2M_CHECK(options_.sigma > 0, "UD2M trains on noisy measurements: --sigma must be positive, not {}", options_.sigma);
  const auto& tasks = physics::task_names();
  UD2M_CHECK(options_.task == "general" || std::find(tasks.begin(), tasks.end(), options_.task) != tasks.end(),
             "unknown --task '{}' (a degrade task, or general)", options_.task);
  UD2M_CHECK(options_.task != "general" || options_.task_options.empty(),
             "task options (--{}) apply to one task, not to general, which draws several",
             options_.task_options.begin()->first);
  fs::create_directories(options_.out_dir);
  const bool recompute = options_.recompute;  // this invocation's, not the run's
  const bool resume = resume_options(checkpoint_path(), "ud2m_train_ud2m", "UD2M training", options_);
  options_.recompute = recompute;
  if (!data_) data_ = std::make_shared<CropDataset>(list_images(options_.data), options_.crop);
  UD2M_CHECK(options_.val_images > 0, "--val-images must be positive, not {}", options_.val_images);
  val_data_ = options_.val_data.empty() ? data_
                                        : std::make_shared<CropDataset>(list_images(options_.val_data), options_.crop);
  torch::manual_seed(options_.seed);  // LoRA and discriminator initialisation
  auto prior = diffusion::load_prior(options_.prior);
  prior->module().eval();  // the frozen base runs without dropout
  std::optional<unrolled::AdapterFile> start;
  bool widened = false;
  if (!resume && !options_.init_adapter.empty()) {
    start = unrolled::read_adapter(options_.init_adapter);
    // The adapter's settings win, except that asking for LoRA on the residual
    // blocks widens an attention-only adapter (the new LoRA starts at zero)
    // and that an explicit K wins.
    widened = options_.lora.on_resblocks() && !start->options.lora.on_resblocks();
    const auto placement = options_.lora.placement;
    if (!options_.blocks_given) options_.blocks = start->options.blocks;
    options_.lora = start->options.lora;
    if (widened) options_.lora.placement = placement;
    options_.noise_inflation = start->options.noise_inflation;
    options_.learned_init = start->options.learned_init;
  }
  network_ = std::make_shared<unrolled::UnrolledNetwork>(
      prior, unrolled::UnrolledOptions{options_.blocks, options_.lora, options_.noise_inflation, options_.learned_init});
  if (start) {
    unrolled::apply_adapter(*start, *network_, options_.prior);
    log::info("starting from the adapter '{}' (trained for '{}'; K = {}, LoRA rank {} on {}{})", start->path,
              start->info.task, options_.blocks, options_.lora.rank, options_.lora.placement,
              widened ? "; the residual blocks' LoRA starts at zero" : "");
  }
  network_->set_recompute(options_.recompute);
  discriminator_ = nets::Discriminator(options_.crop, prior->channels());
  // Initialised on the CPU: the same weights on any device.
  network_->to(device_);
  discriminator_->to(device_);
  std::vector<torch::Tensor> weights, scalars;
  for (auto& [name, p] : network_->trainable_parameters()) (p.dim() == 0 ? scalars : weights).push_back(p);
  auto adamw = torch::optim::AdamWOptions(options_.lr).weight_decay(options_.weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(weights, std::make_unique<torch::optim::AdamWOptions>(adamw));
  groups.emplace_back(scalars, std::make_unique<torch::optim::AdamWOptions>(
                                   torch::optim::AdamWOptions(options_.scalar_lr).weight_decay(0)));
  g_optimizer_ = std::make_unique<FusedAdamW>(std::move(groups), adamw);
  d_optimizer_ = std::make_unique<FusedAdamW>(discriminator_->parameters(), adamw);
  rank_batch_ = dist::rank_batch(options_.batch, dist_->world());
  std::vector<torch::Tensor> initial = discriminator_->parameters();
  for (auto& [name, p] : network_->trainable_parameters()) initial.push_back(p);
  dist_->broadcast(initial);  // equal seeds already make them equal; this makes sure
  rng_ = at::make_generator<at::CPUGeneratorImpl>(options_.seed);
  if (resume) load_checkpoint();
}

physics::Degradation Ud2mTrainer::draw_degradation(torch::Generator& rng, int batch) const {
  auto task = options_.task;
  if (task == "general") {
    const auto& tasks = general_tasks();
    task = tasks[at::randint(static_cast<int64_t>(tasks.size()), {1}, rng, torch::kLong).item<int64_t>()];
  }
  // Random kernels and masks change every draw, from the given stream.
  const auto seed = static_cast<uint64_t>(at::randint(1ll << 40, {1}, rng, torch::kLong).item<int64_t>());
  return physics::make_degradation({task, options_.sigma, seed, options_.task_options},
                                   {batch, 3, options_.crop, options_.crop});
}

Ud2mTrainer::Example Ud2mTrainer::draw_example(const CropDataset& images, torch::Generator& rng, int batch) const {
  Example e;
  e.x = images.batch(batch, rng);
  e.degradation = draw_degradation(rng, batch);
  auto clean = e.op().measure(e.x);  // JPEG: the real codec
  e.y = clean + e.degradation.noise.model_sigma() * gaussian(clean.sizes(), rng, clean.options());
  return e;
}

Ud2mTrainer::Noised Ud2mTrainer::noise_to_random_time(const torch::Tensor& x, torch::Generator& rng) const {
  const auto& schedule = network_->prior().schedule();
  Noised n;
  n.t = static_cast<int>(at::randint(1, schedule.steps(), {1}, rng, torch::kLong).item<int64_t>());
  n.alpha_bar = schedule.alpha_bar(n.t);
  n.eps = gaussian(x.sizes(), rng, x.options());
  n.x_t = std::sqrt(n.alpha_bar) * x + std::sqrt(1 - n.alpha_bar) * n.eps;
  return n;
}

Ud2mLosses Ud2mTrainer::step() {
  // Every draw is for the whole batch, in one order, on every rank, on the CPU.
  auto example = draw_example(*data_, rng_, options_.batch);
  const auto& op = example.op();
  auto noised = noise_to_random_time(example.x, rng_);
  auto block_noise = network_->draw_block_noise(noised.x_t, rng_);
  auto mix = at::rand({options_.batch, 1, 1, 1}, rng_, example.x.options());  // gradient-penalty interpolation
  const double ab = noised.alpha_bar;
  auto share = [&](const torch::Tensor& whole) { return dist_->share(whole, device_); };
  auto x = share(example.x), y = share(example.y), x_t = share(noised.x_t), eps = share(noised.eps);
  for (auto& n : block_noise) n = share(n);
  auto* linear = dynamic_cast<const physics::LinearOperator*>(&op);
  auto y_up = (linear ? linear->pinv(y) : y).detach();  // the discriminator's condition, image-shaped

  Ud2mLosses losses;
  // Generator.
  g_optimizer_->zero_grad();
  torch::Tensor x0, fake_logits;
  {
    Bf16Autocast autocast(device_.type(), options_.bf16);
    x0 = network_->forward(op, y, options_.sigma, x_t, noised.t, block_noise).to(torch::kFloat32);
    fake_logits = discriminator_->forward(x0, y_up).to(torch::kFloat32);
  }
  auto eps_hat = (x_t - std::sqrt(ab) * x0) / std::sqrt(1 - ab);
  auto l2 = torch::mse_loss(eps_hat, eps);
  auto adversarial = torch::binary_cross_entropy_with_logits(fake_logits, torch::ones_like(fake_logits));
  auto g_loss = options_.w_l2 * l2 + options_.w_adv * adversarial;
  auto perceptual = torch::zeros({}, l2.options());
  if (perceptual_) {
    perceptual = perceptual_(x0, x);
    g_loss = g_loss + options_.w_perceptual * perceptual;
  }
  g_loss.backward();
  std::vector<torch::Tensor> g_parameters;
  for (auto& [name, p] : network_->trainable_parameters()) g_parameters.push_back(p);
  auto g_values = torch::stack({g_loss.detach(), l2.detach(), adversarial.detach(), perceptual.detach()})
                      .to(torch::kFloat32);
  dist_->average_gradients(g_parameters, {g_values});
  // The discriminator's gradients from this pass are not its own step's.
  d_optimizer_->zero_grad();
  g_optimizer_->step();

  // Discriminator, with a zero-centred gradient penalty at random interpolates.
  auto fake = x0.detach();
  torch::Tensor real_logits, fake_logits_d;
  {
    Bf16Autocast autocast(device_.type(), options_.bf16);
    real_logits = discriminator_->forward(x, y_up).to(torch::kFloat32);
    fake_logits_d = discriminator_->forward(fake, y_up).to(torch::kFloat32);
  }
  auto d_loss = torch::binary_cross_entropy_with_logits(real_logits, torch::ones_like(real_logits)) +
                torch::binary_cross_entropy_with_logits(fake_logits_d, torch::zeros_like(fake_logits_d));
  auto u = share(mix);
  auto mixed = (u * x + (1 - u) * fake).requires_grad_(true);
  auto grad = torch::autograd::grad({discriminator_->forward(mixed, y_up).sum()}, {mixed}, {}, true, true)[0];
  d_loss = d_loss + options_.w_gp * grad.flatten(1).pow(2).sum(1).mean();
  d_loss.backward();
  auto d_value = d_loss.detach().to(torch::kFloat32).reshape({1}).clone();
  dist_->average_gradients(discriminator_->parameters(), {d_value});
  d_optimizer_->step();

  // The whole batch's losses (averaged with the gradients), so every rank logs
  // and checks the same numbers and stops at the same step.
  losses.generator = g_values[0].item<float>();
  losses.l2 = g_values[1].item<float>();
  losses.adversarial = g_values[2].item<float>();
  losses.perceptual = g_values[3].item<float>();
  losses.discriminator = d_value.item<float>();
  UD2M_CHECK(std::isfinite(losses.generator) && std::isfinite(losses.discriminator),
             "the UD2M losses became non-finite at step {} (generator {}, discriminator {})", step_, losses.generator,
             losses.discriminator);
  ++step_;
  history_.push_back(losses);
  return losses;
}

double Ud2mTrainer::validation_mse(int batches) {
  // A generator of its own: the same draws every call, the training stream untouched.
  auto rng = at::make_generator<at::CPUGeneratorImpl>(options_.seed + 1);
  torch::NoGradGuard no_grad;
  double total = 0;
  for (int b = 0; b < batches; ++b) {
    auto example = draw_example(*data_, rng, options_.batch);
    auto noised = noise_to_random_time(example.x, rng);
    auto x0 = network_->forward(example.op(), example.y.to(device_), options_.sigma, noised.x_t.to(device_),
                                noised.t, rng);
    total += torch::mse_loss(x0.cpu(), example.x).item<double>();
  }
  return total / batches;
}

double Ud2mTrainer::validation_psnr() {
  if (validation_set_.empty()) {
    // Fixed (image, operator, measurement) triples, drawn once.
    auto rng = at::make_generator<at::CPUGeneratorImpl>(options_.seed + 2);
    for (int i = 0; i < options_.val_images; ++i) validation_set_.push_back(draw_example(*val_data_, rng, 1));
  }
  torch::NoGradGuard no_grad;
  auto rng = at::make_generator<at::CPUGeneratorImpl>(options_.seed + 3);
  double total = 0;
  for (auto& example : validation_set_) {
    auto x = unrolled::sample(*network_, example.op(), example.y.to(device_), options_.sigma,
                              example.x.sizes().vec(), {options_.sample_steps}, rng);
    total += metrics::psnr(from_model(x.cpu().clamp(-1, 1)), from_model(example.x));
  }
  return total / validation_set_.size();
}

void Ud2mTrainer::save_checkpoint() {
  TensorMap tensors;
  auto g_params = network_->trainable_parameters();
  for (auto& [name, p] : g_params) tensors["g." + name] = p.detach();
  for (auto& [name, t] : nets::state_dict(*discriminator_)) tensors["d." + name] = t;
  const int64_t g_step = save_adam_state(*g_optimizer_, g_params, "adam_g.", tensors);
  const int64_t d_step = save_adam_state(*d_optimizer_, named(*discriminator_), "adam_d.", tensors);
  tensors["rng"] = rng_.get_state();
  std::vector<float> flat;
  for (auto& l : history_) flat.insert(flat.end(), {l.generator, l.l2, l.adversarial, l.perceptual, l.discriminator});
  tensors["history"] = torch::tensor(flat).reshape({static_cast<int64_t>(history_.size()), 5});
  std::vector<double> validation;
  for (auto& [step, psnr] : validation_history_) validation.insert(validation.end(), {double(step), psnr});
  tensors["validation"] = torch::tensor(validation, torch::kFloat64).reshape({-1, 2});
  nlohmann::json meta = {{"step", step_}, {"adam_g_step", g_step}, {"adam_d_step", d_step},
                         {"options", options_.to_json()}};
  write_safetensors(checkpoint_path(), tensors, {{"ud2m_train_ud2m", meta.dump()}});
  unrolled::save_adapter((fs::path(options_.out_dir) / "adapter.safetensors").string(), *network_,
                         {options_.task, options_.sample_steps,
                          {{"step", step_}, {"options", options_.to_json()},
                           {"perceptual", perceptual_ ? perceptual_.name : "none"}}});
  std::string csv = "step,generator,l2,adversarial,perceptual,discriminator\n";
  for (size_t i = 0; i < history_.size(); ++i) {
    const auto& l = history_[i];
    csv += fmt::format("{},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f}\n", i + 1, l.generator, l.l2, l.adversarial,
                       l.perceptual, l.discriminator);
  }
  write_file_atomic((fs::path(options_.out_dir) / "loss.csv").string(), csv);
  std::string val_csv = "step,validation_psnr\n";
  for (auto& [step, psnr] : validation_history_) val_csv += fmt::format("{},{:.4f}\n", step, psnr);
  write_file_atomic((fs::path(options_.out_dir) / "validation.csv").string(), val_csv);
}

void Ud2mTrainer::load_checkpoint() {
  auto file = read_safetensors(checkpoint_path());
  auto meta = nlohmann::json::parse(file.metadata.at("ud2m_train_ud2m"));
  torch::NoGradGuard no_grad;
  auto g_params = network_->trainable_parameters();
  for (auto& [name, p] : g_params) {
    auto it = file.tensors.find("g." + name);
    UD2M_CHECK(it != file.tensors.end(), "'{}' lacks '{}'", checkpoint_path(), name);
    p.copy_(it->second);
  }
  TensorMap d;
  for (auto& [name, t] : file.tensors)
    if (name.rfind("d.", 0) == 0) d[name.substr(2)] = t;
  nets::load_state_dict(*discriminator_, d, checkpoint_path());
  load_adam_state(*g_optimizer_, g_params, "adam_g.", file.tensors, meta.at("adam_g_step"));
  load_adam_state(*d_optimizer_, named(*discriminator_), "adam_d.", file.tensors, meta.at("adam_d_step"));
  rng_.set_state(file.tensors.at("rng"));
  auto h = file.tensors.at("history").contiguous();
  for (int64_t i = 0; i < h.size(0); ++i) {
    auto r = h[i];
    history_.push_back({r[0].item<float>(), r[1].item<float>(), r[2].item<float>(), r[3].item<float>(),
                        r[4].item<float>()});
  }
  if (file.tensors.count("validation")) {
    auto v = file.tensors.at("validation").contiguous();
    for (int64_t i = 0; i < v.size(0); ++i)
      validation_history_.emplace_back(static_cast<int64_t>(v[i][0].item<double>()), v[i][1].item<double>());
  }
  step_ = meta.at("step");
  log::info("resumed from '{}' at step {}", checkpoint_path(), step_);
}

void Ud2mTrainer::run() {
  if (step_ >= options_.steps) {
    log::info("already trained for {} steps (target {})", step_, options_.steps);
    return;
  }
  log::info("training a UD2M adapter for {} (K = {}, LoRA rank {} on {}) on '{}', batch {}{}, from step {} to {} "
            "on {}; perceptual term: {}",
            options_.task, options_.blocks, options_.lora.rank, options_.lora.placement, options_.prior, options_.batch,
            dist_->world() > 1 ? fmt::format(" ({} processes × {})", dist_->world(), rank_batch_) : "", step_,
            options_.steps, device_.str(), perceptual_ ? perceptual_.name : "off");
  const int val_every = options_.val_every > 0 ? options_.val_every : options_.save_every;
  const bool main = dist_->is_main();  // rank 0 alone validates and writes: all ranks hold the same state
  auto validate = [&] {
    if (!main) return;
    validation_history_.emplace_back(step_, validation_psnr());
    log::info("step {}: validation PSNR {:.2f} dB ({} crops, N = {})", step_, validation_history_.back().second,
              options_.val_images, options_.sample_steps);
  };
  if (validation_history_.empty()) validate();  // the untrained adapter's score, for comparison
  Progress progress("train ud2m", static_cast<int>(options_.steps - step_));
  const TimeLimit time_limit(options_.max_seconds, *dist_, device_);
  StepProfiler profiler(main ? options_.profile : std::string(), device_);  // rank 0 speaks for all
  while (step_ < options_.steps) {
    if (time_limit.reached()) {
      log::info("stopping at step {}: the time limit of {} s is reached", step_, options_.max_seconds);
      if (main) save_checkpoint();
      return;
    }
    profiler.before_step();
    auto l = step();
    profiler.after_step();
    progress.step(fmt::format("G {:.3f} (l2 {:.3f} adv {:.3f}) D {:.3f}", l.generator, l.l2, l.adversarial,
                              l.discriminator));
    if (step_ % val_every == 0 || step_ == options_.steps) validate();
    if (main && (step_ % options_.save_every == 0 || step_ == options_.steps)) save_checkpoint();
  }
}

}  // namespace ud2m::train
