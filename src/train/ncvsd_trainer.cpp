#include "train/ncvsd_trainer.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <functional>

#include "core/atomic_file.hpp"
#include "core/device.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "core/log.hpp"
#include "core/panel.hpp"
#include "core/progress.hpp"
#include "core/random.hpp"
#include "ncvsd/generation.hpp"
#include "ncvsd/vsd.hpp"
#include "nets/state_dict.hpp"
#include "train/adam_state.hpp"
#include "train/autocast.hpp"
#include "train/dropout_seed.hpp"
#include "train/ema.hpp"
#include "train/resume.hpp"
#include "train/step_profiler.hpp"
#include "train/time_limit.hpp"

namespace ud2m::train {
namespace fs = std::filesystem;

namespace {
constexpr const char* kMetadataKey = "ud2m_train_ncvsd";
constexpr double kLevelMin = 0.002, kLevelMax = 80;

NamedParameters named_with_prefix(torch::nn::Module& module, const std::string& prefix) {
  NamedParameters out;
  for (auto& [name, p] : named(module)) out.emplace_back(prefix + name, p);
  return out;
}

NamedParameters concat(NamedParameters a, const NamedParameters& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
}  // namespace

nlohmann::json NcvsdTrainOptions::to_json() const {
  return {{"teacher", teacher}, {"student_config", student_config}, {"init_generator", init_generator},
          {"data", data},       {"crop", crop},   {"batch", batch},
          {"lr", lr},           {"generator_lr", generator_lr}, {"ema_decay", ema_decay},
          {"bf16", bf16},       {"seed", seed},   {"save_every", save_every}};
}

NcvsdTrainOptions NcvsdTrainOptions::from_json(const nlohmann::json& j) {
  NcvsdTrainOptions o;
  o.teacher = j.value("teacher", o.teacher);
  o.student_config = j.value("student_config", o.student_config);
  o.init_generator = j.value("init_generator", o.init_generator);
  o.data = j.value("data", o.data);
  o.crop = j.value("crop", o.crop);
  o.batch = j.value("batch", o.batch);
  o.lr = j.value("lr", o.lr);
  o.generator_lr = j.value("generator_lr", o.generator_lr);
  o.ema_decay = j.value("ema_decay", o.ema_decay);
  o.bf16 = j.value("bf16", o.bf16);
  o.seed = j.value("seed", o.seed);
  o.save_every = j.value("save_every", o.save_every);
  return o;
}

std::string NcvsdTrainer::checkpoint_path() const {
  return (fs::path(options_.out_dir) / "checkpoint.safetensors").string();
}

NcvsdTrainer::NcvsdTrainer(NcvsdTrainOptions options, std::shared_ptr<const CropDataset> data,
                           std::shared_ptr<dist::DistContext> dist)
    : options_(std::move(options)), device_(parse_device(options_.device)), dist_(std::move(dist)),
      data_(std::move(data)) {
  if (!dist_) dist_ = std::make_shared<dist::DistContext>();
  UD2M_CHECK(!options_.out_dir.empty(), "an output folder (--out) is required");
  UD2M_CHECK(options_.batch > 0 && options_.steps > 0, "batch and steps must be positive");
  UD2M_CHECK(options_.ema_decay >= 0 && options_.ema_decay < 1, "--ema-decay must be in [0, 1), not {}",
             options_.ema_decay);
  fs::create_directories(options_.out_dir);
  const bool resume = resume_options(checkpoint_path(), kMetadataKey, "NCVSD training", options_);
  if (!data_) data_ = std::make_shared<CropDataset>(list_images(options_.data), options_.crop);
  teacher_ = diffusion::load_prior(options_.teacher);
  teacher_->module().eval();
  for (auto& p : teacher_->module().parameters()) p.set_requires_grad(false);
  make_student();
  if (!resume && !options_.init_generator.empty()) start_from_generator(options_.init_generator);
  for (auto& p : ema_->parameters()) p.set_requires_grad(false);
  generator_logvar_ = ncvsd::LogVariance(64, options_.seed);
  fake_logvar_ = ncvsd::LogVariance(64, options_.seed + 1);
  // Initialised on the CPU: the same weights on any device.
  for (torch::nn::Module* m : std::initializer_list<torch::nn::Module*>{
           &teacher_->module(), generator_.get(), fake_.get(), ema_.get(), generator_logvar_.get(), fake_logvar_.get()})
    m->to(device_);
  auto adam = [](double lr) { return torch::optim::AdamWOptions(lr).betas({0.9, 0.99}).weight_decay(0); };
  auto g_params = generator_->parameters(), lv = generator_logvar_->parameters();
  g_params.insert(g_params.end(), lv.begin(), lv.end());
  auto f_params = fake_->parameters(), lvf = fake_logvar_->parameters();
  f_params.insert(f_params.end(), lvf.begin(), lvf.end());
  g_optimizer_ = std::make_unique<FusedAdamW>(g_params, adam(options_.generator_lr));
  f_optimizer_ = std::make_unique<FusedAdamW>(f_params, adam(options_.lr));
  rank_batch_ = dist::rank_batch(options_.batch, dist_->world());
  std::vector<torch::Tensor> initial = g_params;
  initial.insert(initial.end(), f_params.begin(), f_params.end());
  dist_->broadcast(initial);  // equal seeds already make them equal; this makes sure
  rng_ = at::make_generator<at::CPUGeneratorImpl>(options_.seed);
  if (resume) load_checkpoint();
}

void NcvsdTrainer::make_student() {
  // Pixel crops are the data: a latent teacher would need the VAE's encoder.
  UD2M_CHECK(!teacher_->latent_space(), "the teacher '{}' is a latent model; distillation here runs on pixel crops "
             "(the VAE's encoder, which would map them to latents, is not ported)", options_.teacher);
  torch::manual_seed(options_.seed);  // a fresh student's weights, a copy's fresh parts (EDM2's log-variance head)
  auto make = student_maker();
  generator_ = make();
  fake_ = make();
  ema_ = make();
  // All three start equal.
  const auto weights = nets::state_dict(*generator_);
  nets::load_state_dict(*fake_, weights, "the student");
  nets::load_state_dict(*ema_, weights, "the student");
}

std::function<ncvsd::GeneratorNet()> NcvsdTrainer::student_maker() {
  if (!options_.student_config.empty()) {  // a fresh ADM student
    auto config = nets::AdmConfig::preset(options_.student_config);
    UD2M_CHECK(config.in_channels == teacher_->channels(), "the student '{}' has {} channels, the teacher {}",
               options_.student_config, config.in_channels, teacher_->channels());
    return [conditional = ncvsd::conditional_config(config), schedule = teacher_->schedule()] {
      return ncvsd::as_generator_net(std::make_shared<ncvsd::ConditionalDenoiserImpl>(conditional, schedule));
    };
  }
  // A copy of the teacher with the condition inputs added (at zero, so that it *is* the teacher).
  if (auto adm = std::dynamic_pointer_cast<diffusion::AdmPrior>(teacher_))
    return [adm] { return ncvsd::as_generator_net(std::make_shared<ncvsd::ConditionalDenoiserImpl>(*adm)); };
  if (auto edm2 = std::dynamic_pointer_cast<diffusion::Edm2Prior>(teacher_)) {
    UD2M_CHECK(edm2->net()->config().label_dim == 0, "the teacher '{}' is class-conditional, and the photographs of "
               "--data have no classes: distil an unconditional model", options_.teacher);
    return [edm2] { return ncvsd::as_generator_net(std::make_shared<ncvsd::Edm2GeneratorImpl>(*edm2)); };
  }
  fail("the teacher '{}' is neither an ADM nor an EDM2 network, so the student cannot start as its copy: name a "
       "student architecture with --student-config (an ADM preset, e.g. ud2m-small-64)", options_.teacher);
}

void NcvsdTrainer::start_from_generator(const std::string& path) {
  auto start = ncvsd::load_generator(path);
  UD2M_CHECK(!start->published(), "the generator '{}' is one of NCVSD's published networks, which sample and "
             "restore but do not train here: distillation continues generators it wrote (`train --method ncvsd`)",
             path);
  const auto theirs = start->description(), ours = generator_->description();
  UD2M_CHECK(theirs.at("arch") == ours.at("arch") && theirs.at("config") == ours.at("config"),
             "the generator '{}' is not of the student's architecture (it: {} {}; the student: {} {})", path,
             theirs.at("arch").dump(), theirs.at("config").dump(), ours.at("arch").dump(), ours.at("config").dump());
  const auto weights = nets::state_dict(start->network());
  nets::load_state_dict(generator_->network(), weights, path);
  nets::load_state_dict(ema_->network(), weights, path);
  log::info("the student starts from the generator '{}'", path);
}

NcvsdLosses NcvsdTrainer::step() {
  seed_dropout(options_.seed, step_, dist_->rank(), device_);
  // Every draw is for the whole batch, in one order, on every rank, on the
  // CPU; each rank keeps its share, on its device.
  const int64_t n = options_.batch;
  auto levels = [&](double mean, double std) {
    auto drawn = ncvsd::lognormal_levels(n, mean, std, rng_).clamp(kLevelMin, kLevelMax).to(torch::kFloat32);
    return dist_->share(drawn, device_);
  };
  auto normal_like = [&](const torch::Tensor& share) {
    auto shape = share.sizes().vec();
    shape[0] = n;
    return dist_->share(gaussian(shape, rng_, share.options().device(torch::kCPU)), share.device());
  };
  auto noisy = [&](const torch::Tensor& clean, const torch::Tensor& level) {
    return clean + level.view({-1, 1, 1, 1}) * normal_like(clean);
  };
  // Each phase gets its own crops and levels σ, as in the published loop.
  auto noisy_crops = [&] {
    auto x = dist_->share(data_->batch(options_.batch, rng_), device_);
    auto sigma = levels(0.4, 2.0);
    return std::pair{noisy(x, sigma), sigma};
  };
  NcvsdLosses losses;

  {  // Fake score: denoising score matching on the generator's current samples.
    auto [y, sigma] = noisy_crops();
    generator_->eval();  // the samples are drawn without dropout
    fake_->train();
    torch::Tensor sample;
    {
      torch::NoGradGuard no_grad;
      Bf16Autocast autocast(device_.type(), options_.bf16);
      sample = ncvsd::generate(*generator_, y, sigma, normal_like(y)).to(torch::kFloat32);
    }
    auto t = levels(-0.8, 1.6);
    auto x_t = noisy(sample, t);
    torch::Tensor s;
    {
      Bf16Autocast autocast(device_.type(), options_.bf16);
      s = fake_->forward(x_t, t, y, sigma).to(torch::kFloat32);
    }
    auto loss = ncvsd::fake_score_loss(s, sample, ncvsd::edm_weight(t), fake_logvar_->forward(t)).mean();
    f_optimizer_->zero_grad();
    loss.backward();
    auto value = loss.detach().reshape({1}).clone();
    dist_->average_gradients(f_optimizer_->param_groups()[0].params(), {value});
    f_optimizer_->step();
    losses.fake = value.item<float>();
  }

  {  // Generator: noise-conditional VSD.
    auto [y, sigma] = noisy_crops();
    generator_->train();
    fake_->eval();  // the fake score is a fixed target here, without dropout
    torch::Tensor sample;
    {
      Bf16Autocast autocast(device_.type(), options_.bf16);
      sample = ncvsd::generate(*generator_, y, sigma, normal_like(y)).to(torch::kFloat32);
    }
    auto t = levels(0.4, 2.0);
    auto x_t = noisy(sample.detach(), t);
    torch::Tensor s, s0;
    {
      torch::NoGradGuard no_grad;
      Bf16Autocast autocast(device_.type(), options_.bf16);
      s = fake_->forward(x_t, t, y, sigma).to(torch::kFloat32);
      auto point = ncvsd::noise_conditional_point(y, sigma, x_t, t);
      s0 = ncvsd::prior_x0(*teacher_, point.y_eff, point.sigma_eff.to(torch::kFloat32)).to(torch::kFloat32);
    }
    auto logvar = generator_logvar_->forward((1 + ncvsd::kNoiseInjection) * sigma);
    auto loss = ncvsd::generator_loss(sample, s0, s, ncvsd::edm_weight(t), logvar).mean();
    g_optimizer_->zero_grad();
    loss.backward();
    auto value = loss.detach().reshape({1}).clone();
    dist_->average_gradients(g_optimizer_->param_groups()[0].params(), {value});
    // The fake score's gradients from this pass are not its own step's.
    f_optimizer_->zero_grad();
    g_optimizer_->step();
    losses.generator = value.item<float>();
  }
  // After the reductions, so that every rank stops at the same step.
  UD2M_CHECK(std::isfinite(losses.generator) && std::isfinite(losses.fake),
             "the NCVSD losses became non-finite at step {} (generator {}, fake score {})", step_, losses.generator,
             losses.fake);
  update_ema(*ema_, *generator_, options_.ema_decay, step_);
  ++step_;
  history_.push_back(losses);
  return losses;
}

void NcvsdTrainer::save_checkpoint() {
  TensorMap tensors;
  const auto g_params = concat(named_with_prefix(*generator_, "g."), named_with_prefix(*generator_logvar_, "lvg."));
  const auto f_params = concat(named_with_prefix(*fake_, "f."), named_with_prefix(*fake_logvar_, "lvf."));
  for (auto& [name, p] : concat(g_params, f_params)) tensors[name] = p.detach();
  for (auto& [name, t] : nets::state_dict(*ema_)) tensors["ema." + name] = t;
  const int64_t g_step = save_adam_state(*g_optimizer_, g_params, "adam_g.", tensors);
  const int64_t f_step = save_adam_state(*f_optimizer_, f_params, "adam_f.", tensors);
  tensors["rng"] = rng_.get_state();
  std::vector<float> flat;
  for (auto& l : history_) flat.insert(flat.end(), {l.generator, l.fake});
  tensors["history"] = torch::tensor(flat).reshape({static_cast<int64_t>(history_.size()), 2});
  nlohmann::json meta = {{"step", step_}, {"adam_g_step", g_step}, {"adam_f_step", f_step},
                         {"options", options_.to_json()}};
  write_safetensors(checkpoint_path(), tensors, {{kMetadataKey, meta.dump()}});
  ncvsd::save_generator((fs::path(options_.out_dir) / "generator.safetensors").string(), *ema_,
                        {{"teacher", options_.teacher}, {"step", step_}, {"training", options_.to_json()}});
  std::string csv = "step,generator,fake_score\n";
  for (size_t i = 0; i < history_.size(); ++i)
    csv += fmt::format("{},{:.6f},{:.6f}\n", i + 1, history_[i].generator, history_[i].fake);
  write_file_atomic((fs::path(options_.out_dir) / "loss.csv").string(), csv);
  // A separate generator keeps sampling from disturbing the training stream.
  auto rng = at::make_generator<at::CPUGeneratorImpl>(options_.seed + 2);
  ema_->eval();
  auto grid =
      ncvsd::generate_images(*ema_, {16, 3, options_.crop, options_.crop}, ncvsd::published_indices(2), rng, device_);
  write_png((fs::path(options_.out_dir) / "samples.png").string(), make_grid(from_model(grid.cpu()).clamp(0, 1)));
}

void NcvsdTrainer::load_checkpoint() {
  auto file = read_safetensors(checkpoint_path());
  auto meta = nlohmann::json::parse(file.metadata.at(kMetadataKey));
  torch::NoGradGuard no_grad;
  const auto g_params = concat(named_with_prefix(*generator_, "g."), named_with_prefix(*generator_logvar_, "lvg."));
  const auto f_params = concat(named_with_prefix(*fake_, "f."), named_with_prefix(*fake_logvar_, "lvf."));
  for (auto& [name, p] : concat(g_params, f_params)) {
    auto it = file.tensors.find(name);
    UD2M_CHECK(it != file.tensors.end() && it->second.sizes() == p.sizes(),
               "'{}' lacks '{}' or has another shape: not a checkpoint of this teacher", checkpoint_path(), name);
    p.copy_(it->second);
  }
  TensorMap ema;
  for (auto& [name, t] : file.tensors)
    if (name.rfind("ema.", 0) == 0) ema[name.substr(4)] = t;
  nets::load_state_dict(*ema_, ema, checkpoint_path());
  load_adam_state(*g_optimizer_, g_params, "adam_g.", file.tensors, meta.at("adam_g_step"));
  load_adam_state(*f_optimizer_, f_params, "adam_f.", file.tensors, meta.at("adam_f_step"));
  rng_.set_state(file.tensors.at("rng"));
  auto h = file.tensors.at("history").contiguous();
  for (int64_t i = 0; i < h.size(0); ++i) history_.push_back({h[i][0].item<float>(), h[i][1].item<float>()});
  step_ = meta.at("step");
  log::info("resumed from '{}' at step {}", checkpoint_path(), step_);
}

void NcvsdTrainer::run() {
  if (step_ >= options_.steps) {
    log::info("already trained for {} steps (target {})", step_, options_.steps);
    return;
  }
  log::info("distilling an NCVSD generator from '{}' on {} photos, batch {}{}, from step {} to {} on {}",
            options_.teacher, data_->photos(), options_.batch,
            dist_->world() > 1 ? fmt::format(" ({} processes × {})", dist_->world(), rank_batch_) : "", step_,
            options_.steps, device_.str());
  Progress progress("train ncvsd", static_cast<int>(options_.steps - step_));
  const TimeLimit time_limit(options_.max_seconds, *dist_, device_);
  StepProfiler profiler(dist_->is_main() ? options_.profile : std::string(), device_);  // rank 0 speaks for all
  while (step_ < options_.steps) {
    if (time_limit.reached()) {
      log::info("stopping at step {}: the time limit of {} s is reached", step_, options_.max_seconds);
      if (dist_->is_main()) save_checkpoint();
      return;
    }
    profiler.before_step();
    auto l = step();
    profiler.after_step();
    progress.step(fmt::format("G {:.1f} fake {:.1f}", l.generator, l.fake));
    if (dist_->is_main() && (step_ % options_.save_every == 0 || step_ == options_.steps)) save_checkpoint();
  }
}

}  // namespace ud2m::train
