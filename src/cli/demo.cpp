// ud2m demo: degrade the bundled example image and restore it, writing a
// side-by-side panel. The one command a new user runs first.
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <map>

#include "cli/commands.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "core/log.hpp"
#include "core/panel.hpp"
#include "core/progress.hpp"
#include "metrics/metrics.hpp"
#include "diffusion/prior.hpp"
#include "physics/degradation.hpp"
#include "physics/svd.hpp"
#include "samplers/ddrm.hpp"
#include "ud2m/adapter.hpp"
#include "ud2m/sampler.hpp"
#include "variational/tv.hpp"

namespace ud2m::cli {
namespace {

struct DemoArgs {
  std::string image = std::string(UD2M_ASSETS_DIR) + "/astronaut_256.png";
  std::string task = "gaussian_deblur";
  double sigma = 0.01;
  uint64_t seed = 0;
  std::string out_dir = "demo_out";
  std::string model = std::string(UD2M_MODELS_DIR) + "/ud2m-small-64.safetensors";  // "" or missing: TV only
  int nfe = samplers::DdrmOptions{}.steps;
  std::string adapter;  // UD2M adapter; empty: the shipped one for the task, if any
};

// The shipped adapter trained for `task`, else the general-operator one.
std::string shipped_adapter(const std::string& task) {
  const std::string dir = std::string(UD2M_MODELS_DIR) + "/ud2m-small-64-";
  const std::map<std::string, std::string> per_task = {
      {"gaussian_deblur", "deblur"}, {"sr", "sr"}, {"jpeg", "jpeg"}, {"inpainting_random", "inpainting"}};
  auto it = per_task.find(task);
  return dir + (it != per_task.end() ? it->second : "general") + ".adapter.safetensors";
}

// DDRM with the shipped prior (the fastest zero-shot sampler here), if the
// prior is there and the operator has an SVD.
torch::Tensor restore_with_prior(const DemoArgs& args, const physics::Degradation& degradation, const torch::Tensor& y) {
  if (args.model.empty() || !std::filesystem::exists(args.model)) {
    log::info("no prior at '{}': restoring with TV only", args.model);
    return {};
  }
  if (!physics::svd_of(*degradation.op)) {
    log::info("the {} operator has no SVD for DDRM: restoring with TV only", degradation.op->name());
    return {};
  }
  auto prior = diffusion::load_prior(args.model);
  samplers::DdrmOptions options;
  options.steps = args.nfe;
  auto rng = at::make_generator<at::CPUGeneratorImpl>(args.seed);
  Progress progress("demo: DDRM with the shipped prior", options.steps);
  auto x = samplers::ddrm(*prior, *degradation.op, y, degradation.noise.sigma, options, rng,
                          [&](int, int, const torch::Tensor&) { progress.step(); });
  return from_model(x).clamp(0, 1);
}

// The UD2M network the demo runs with the task's adapter (the shipped ones:
// N = 1 step of K = 9 blocks, 9 NFE), or none where the prior, an adapter
// that fits it, or an operator UD2M takes is missing. Built before anything is
// written, so that a wrong --adapter fails without leaving outputs behind.
struct Ud2mSetup {
  std::shared_ptr<unrolled::UnrolledNetwork> network;  // null: no UD2M restoration
  int steps = 0;
  std::string task;
  int nfe() const { return steps * network->evaluations(); }
};

Ud2mSetup prepare_ud2m(const DemoArgs& args, const physics::Degradation& degradation,
                       const std::vector<int64_t>& image_shape) {
  const auto adapter_path = args.adapter.empty() ? shipped_adapter(args.task) : args.adapter;
  if (args.model.empty() || !std::filesystem::exists(args.model) || !std::filesystem::exists(adapter_path)) return {};
  const bool image_measurement = degradation.op->output_shape(image_shape) == image_shape;
  if (!dynamic_cast<const physics::LinearOperator*>(degradation.op.get()) && !image_measurement) {
    log::info("UD2M does not take the {} operator: no UD2M restoration", degradation.op->name());
    return {};
  }
  auto file = unrolled::read_adapter(adapter_path);
  auto network = std::make_shared<unrolled::UnrolledNetwork>(diffusion::load_prior(args.model), file.options);
  if (args.adapter.empty() && file.base_fingerprint != network->base_fingerprint()) {
    log::info("the shipped adapters fit the shipped prior, not '{}': no UD2M restoration (give --adapter)",
              args.model);
    return {};
  }
  UD2M_CHECK(file.info.fits(args.task), "the adapter '{}' was trained for {}, not {}", adapter_path, file.info.task,
             args.task);
  unrolled::apply_adapter(file, *network, args.model);
  network->fold_lora();
  return {network, file.info.steps, file.info.task};
}

torch::Tensor restore_with_ud2m(const Ud2mSetup& ud2m, const physics::Degradation& degradation, const torch::Tensor& y,
                                const std::vector<int64_t>& image_shape, uint64_t seed) {
  if (!ud2m.network) return {};
  unrolled::SamplerOptions options;
  options.steps = ud2m.steps;
  auto rng = at::make_generator<at::CPUGeneratorImpl>(seed);
  Progress progress("demo: UD2M with the " + ud2m.task + " adapter", options.steps);
  torch::NoGradGuard no_grad;
  auto x = unrolled::sample(*ud2m.network, *degradation.op, y, degradation.noise.sigma, image_shape, options, rng,
                            [&](int, int, const torch::Tensor&) { progress.step(); });
  return from_model(x).clamp(0, 1);
}

void run_demo(const DemoArgs& args) {
  auto clean = read_image(args.image);
  physics::TaskSpec spec{args.task, args.sigma, args.seed, {}};
  auto degradation = physics::make_degradation(spec, clean.sizes().vec());
  const auto ud2m_setup = prepare_ud2m(args, degradation, clean.sizes().vec());
  std::filesystem::create_directories(args.out_dir);
  // The same noise stream as `ud2m degrade --seed`, so the demo's measurement can be reproduced.
  auto rng = at::make_generator<at::CPUGeneratorImpl>(physics::noise_seed(args.seed));
  torch::Tensor y;
  {
    torch::NoGradGuard no_grad;
    y = degradation.noise.add(degradation.op->measure(to_model(clean)), rng);
  }
  const auto dir = std::filesystem::path(args.out_dir);
  write_png((dir / "measurement.png").string(), from_model(y));
  write_file_atomic((dir / "measurement.json").string(), degradation.sidecar.dump(2) + "\n");

  variational::TvOptions options;
  options.weight = variational::default_tv_weight(args.sigma);
  torch::Tensor x;
  {
    Progress progress("demo: TV restoration", options.iterations);
    x = variational::tv_restore(*degradation.op, y, clean.sizes().vec(), options,
                                [&](int, const torch::Tensor&) { progress.step(); });
  }
  auto tv = from_model(x).clamp(0, 1);
  write_png((dir / "tv.png").string(), tv);
  auto ddrm = restore_with_prior(args, degradation, y);
  if (ddrm.defined()) write_png((dir / "ddrm.png").string(), ddrm);
  auto ud2m = restore_with_ud2m(ud2m_setup, degradation, y, clean.sizes().vec(), args.seed);
  if (ud2m.defined()) write_png((dir / "ud2m.png").string(), ud2m);
  // restored.png: the best-informed result the demo has (UD2M, else DDRM, else TV).
  write_png((dir / "restored.png").string(), ud2m.defined() ? ud2m : ddrm.defined() ? ddrm : tv);

  const bool same_size = y.sizes() == clean.sizes();
  const double psnr_y = same_size ? metrics::psnr(from_model(y).clamp(0, 1), clean) : 0.0;
  std::vector<PanelItem> items = {
      {same_size ? fmt::format("measurement {:.2f} dB", psnr_y) : "measurement", from_model(y)},
      {fmt::format("TV {:.2f} dB", metrics::psnr(tv, clean)), tv}};
  std::string summary = fmt::format("TV {:.2f} dB", metrics::psnr(tv, clean));
  if (ddrm.defined()) {
    const double psnr_ddrm = metrics::psnr(ddrm, clean);
    items.push_back({fmt::format("DDRM {} NFE {:.2f} dB", args.nfe, psnr_ddrm), ddrm});
    summary += fmt::format(", DDRM ({} NFE, shipped prior) {:.2f} dB", args.nfe, psnr_ddrm);
  }
  if (ud2m.defined()) {
    const double psnr_ud2m = metrics::psnr(ud2m, clean);
    items.push_back({fmt::format("UD2M {} NFE {:.2f} dB", ud2m_setup.nfe(), psnr_ud2m), ud2m});
    summary += fmt::format(", UD2M ({} NFE) {:.2f} dB", ud2m_setup.nfe(), psnr_ud2m);
  }
  items.push_back({"ground truth", clean});
  write_png((dir / "panel.png").string(), make_panel(items));
  const auto measured = same_size ? fmt::format("measurement {:.2f} dB -> ", psnr_y) : std::string();
  log::info("{} (sigma {}): {}{} PSNR; panel: {}", args.task, args.sigma, measured, summary,
            (dir / "panel.png").string());
}

}  // namespace

void add_demo_command(CLI::App& app) {
  auto args = std::make_shared<DemoArgs>();
  auto* cmd = app.add_subcommand(
      "demo", "Degrade the bundled example image and restore it with TV, with the shipped prior (DDRM) and with "
              "UD2M (the shipped adapter for the task); writes measurement, tv.png, ddrm.png, ud2m.png, restored.png "
              "(the best-informed of them) and panel.png.");
  cmd->add_option("--image", args->image, "Clean image to degrade")->check(CLI::ExistingFile)->capture_default_str();
  cmd->add_option("--task", args->task, "Degradation task (see `ud2m degrade --help`)")->capture_default_str();
  cmd->add_option("--sigma", args->sigma, "Measurement noise std in [0,1] image units")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed of every random choice")->capture_default_str();
  cmd->add_option("--out-dir", args->out_dir, "Folder for the outputs")->capture_default_str();
  cmd->add_option("--model", args->model, "Prior for the DDRM restoration (\"\": TV only)")->capture_default_str();
  cmd->add_option("--nfe", args->nfe, "DDRM steps")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--adapter", args->adapter, "UD2M adapter (default: the shipped one for the task, or the general one)")
      ->check(CLI::ExistingFile);
  cmd->callback([args] { run_demo(*args); });
}

}  // namespace ud2m::cli
