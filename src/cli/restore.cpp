// ud2m restore: measurement (+ sidecar) -> restored image, panel, JSON report.
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>

#include "cli/commands.hpp"
#include "cli/measurement.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "core/log.hpp"
#include "core/panel.hpp"
#include "core/progress.hpp"
#include "diffusion/prior.hpp"
#include "metrics/metrics.hpp"
#include "samplers/diffpir.hpp"
#include "variational/tv.hpp"

namespace ud2m::cli {
namespace {

struct RestoreArgs {
  std::string method = "tv";
  std::string measurement, sidecar, out, panel, reference, model;
  int iterations = 100;  // TV iterations
  int nfe = 100;         // diffusion samplers: network evaluations per sample
  int samples = 1;
  uint64_t seed = 0;
  double tv_weight = 0.0;
  int bit_depth = 8;
};

void check_writable(const std::string& path, const char* flag) {
  if (path.empty()) return;
  auto dir = std::filesystem::path(path).parent_path();
  UD2M_CHECK(dir.empty() || std::filesystem::is_directory(dir), "{} '{}': the folder '{}' does not exist", flag,
             path, dir.string());
}

struct Restoration {
  std::vector<torch::Tensor> samples;  // model units
  nlohmann::json settings;
};

Restoration restore_tv(const RestoreArgs& args, const Measurement& m) {
  variational::TvOptions options;
  options.iterations = args.iterations;
  options.weight = args.tv_weight > 0 ? args.tv_weight : variational::default_tv_weight(m.degradation.noise.sigma);
  Progress progress("restore (tv)", options.iterations);
  auto x = variational::tv_restore(*m.degradation.op, m.y, m.image_shape, options,
                                   [&](int, const torch::Tensor&) { progress.step(); });
  return {{x}, {{"tv_weight", options.weight}, {"iterations", options.iterations}}};
}

Restoration restore_diffpir(const RestoreArgs& args, const Measurement& m) {
  UD2M_CHECK(!args.model.empty(), "--method diffpir needs a prior: --model FILE");
  auto* linear = dynamic_cast<const physics::LinearOperator*>(m.degradation.op.get());
  UD2M_CHECK(linear, "DiffPIR needs a linear operator; '{}' is not linear", m.degradation.op->name());
  UD2M_CHECK(m.degradation.noise.sigma > 0, "DiffPIR needs measurement noise sigma > 0 (the sidecar says {})",
             m.degradation.noise.sigma);
  auto prior = diffusion::load_prior(args.model);
  UD2M_CHECK(m.image_shape[1] == prior->channels(), "the prior '{}' models {}-channel images, the measurement {}",
             args.model, prior->channels(), m.image_shape[1]);
  const int multiple = prior->size_multiple();
  UD2M_CHECK(m.image_shape[2] % multiple == 0 && m.image_shape[3] % multiple == 0,
             "the prior '{}' needs image sides that are multiples of {}, not {}x{}", args.model, multiple,
             m.image_shape[3], m.image_shape[2]);
  samplers::DiffPirOptions options;
  options.steps = args.nfe;
  auto rng = at::make_generator<at::CPUGeneratorImpl>(args.seed);
  Restoration r{{}, {{"model", args.model}, {"nfe", options.steps}, {"zeta", options.zeta}, {"lambda", options.lambda},
                     {"seed", args.seed}}};
  Progress progress("restore (diffpir)", options.steps * args.samples);
  for (int s = 0; s < args.samples; ++s) {
    auto x = samplers::diffpir(*prior, *linear, m.y, m.degradation.noise.sigma, options, rng,
                               [&](int step, int, const torch::Tensor& x0) {
                                 UD2M_CHECK(torch::isfinite(x0).all().item<bool>(),
                                            "DiffPIR produced NaN or infinite values at step {}", step);
                                 progress.step();
                               });
    r.samples.push_back(x.clamp(-1, 1));
  }
  return r;
}

void run_restore(const RestoreArgs& args) {
  UD2M_CHECK(args.method == "tv" || args.method == "diffpir", "unknown --method '{}'; available: tv, diffpir",
             args.method);
  UD2M_CHECK(args.nfe > 0, "--nfe must be positive, not {}", args.nfe);
  UD2M_CHECK(args.samples > 0, "--samples must be positive, not {}", args.samples);
  check_writable(args.out, "--out");
  check_writable(args.panel, "--panel");
  auto m = load_measurement(args.measurement, args.sidecar);
  torch::Tensor reference;
  if (!args.reference.empty()) {
    reference = read_image(args.reference, static_cast<int>(m.image_shape[1]));
    UD2M_CHECK(reference.sizes().vec() == m.image_shape, "--reference '{}' is {} but the restored image will be {}",
               args.reference, fmt::join(reference.sizes(), "x"), fmt::join(m.image_shape, "x"));
  }
  const auto start = std::chrono::steady_clock::now();
  auto r = args.method == "tv" ? restore_tv(args, m) : restore_diffpir(args, m);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // Several samples: the posterior mean is the estimate, their spread the uncertainty.
  auto stack = from_model(torch::stack(r.samples)).clamp(0, 1);
  auto restored = stack.mean(0);
  nlohmann::json report = {{"method", args.method}, {"measurement", args.measurement}, {"seconds", seconds},
                           {"samples", args.samples}, {"task", m.degradation.sidecar.value("task", "")},
                           {"sigma", m.degradation.noise.sigma}, {"settings", r.settings}};
  if (reference.defined()) {
    report["psnr"] = metrics::psnr(restored, reference);
    log::info("PSNR against '{}': {:.2f} dB", args.reference, report["psnr"].get<double>());
  }
  write_png(args.out, restored, args.bit_depth);
  write_file_atomic(replace_extension(args.out, ".json"), report.dump(2) + "\n");
  if (!args.panel.empty()) {
    std::vector<PanelItem> items;
    if (m.y.dim() == 4 && (m.y.size(1) == 1 || m.y.size(1) == 3)) items.push_back({"measurement", from_model(m.y)});
    items.push_back({args.samples > 1 ? "posterior mean" : args.method, restored});
    if (args.samples > 1) {
      auto std_map = stack.std(0).mean(1, true);
      items.push_back({"std (x4)", (4 * std_map).clamp(0, 1)});
    }
    if (reference.defined()) items.push_back({"reference", reference});
    write_png(args.panel, make_panel(items));
  }
  log::info("wrote '{}' ({:.1f} s)", args.out, seconds);
}

}  // namespace

void add_restore_command(CLI::App& app) {
  auto args = std::make_shared<RestoreArgs>();
  auto* cmd = app.add_subcommand("restore", "Restore an image from a measurement made by `ud2m degrade`.");
  cmd->add_option("--measurement,-m", args->measurement,
                  "Measurement: PNG/JPEG with a JSON sidecar, or .safetensors (exact values, sidecar inside)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--sidecar", args->sidecar, "Sidecar JSON describing the degradation (default: beside the measurement)");
  cmd->add_option("--out,-o", args->out, "Restored image (PNG; the posterior mean when --samples > 1); a JSON report "
                  "is written beside it")->required();
  cmd->add_option("--method", args->method,
                  "tv: total-variation regularised (non-learned); diffpir: DiffPIR with a diffusion prior (linear "
                  "operators, sigma > 0)")->capture_default_str();
  cmd->add_option("--model", args->model, "Diffusion prior for diffpir (ud2m file, original checkpoint, diffusers folder)");
  cmd->add_option("--nfe", args->nfe, "Network evaluations per sample (diffpir steps)")->capture_default_str();
  cmd->add_option("--samples", args->samples, "Posterior samples; the output is their mean")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed of the sampler's noise")->capture_default_str();
  cmd->add_option("--panel", args->panel, "Also write a side-by-side PNG: measurement | restored | std | reference");
  cmd->add_option("--reference", args->reference, "Ground-truth image: report PSNR and add it to the panel")
      ->check(CLI::ExistingFile);
  cmd->add_option("--iterations", args->iterations, "TV iterations")->capture_default_str();
  cmd->add_option("--tv-weight", args->tv_weight, "TV weight λ in [-1,1] units (default: chosen from the noise level)");
  cmd->add_option("--bit-depth", args->bit_depth, "PNG bit depth of the output: 8 or 16")
      ->check(CLI::IsMember({8, 16}))
      ->capture_default_str();
  cmd->callback([args] { run_restore(*args); });
}

}  // namespace ud2m::cli
