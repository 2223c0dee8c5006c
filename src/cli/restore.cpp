// ud2m restore: measurement (+ sidecar) -> restored image, panel, JSON report;
// or a folder of measurements -> a folder of restorations.
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>

#include "cli/commands.hpp"
#include "cli/prior_options.hpp"
#include "cli/measurement.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "core/log.hpp"
#include "core/panel.hpp"
#include "core/progress.hpp"
#include "diffusion/padded_denoiser.hpp"
#include "diffusion/prior.hpp"
#include "metrics/metrics.hpp"
#include "metrics/posterior.hpp"
#include "ncvsd/networks.hpp"
#include "physics/square_root.hpp"
#include "samplers/ddrm.hpp"
#include "samplers/diffpir.hpp"
#include "samplers/dps.hpp"
#include "samplers/latino.hpp"
#include "samplers/pnp_ncvsd.hpp"
#include "ud2m/adapter.hpp"
#include "ud2m/sampler.hpp"
#include "variational/tv.hpp"

namespace ud2m::cli {
namespace {

namespace fs = std::filesystem;

struct Method {
  int default_nfe;  // the published default (TV: iterations)
  const char* summary;
};

const std::map<std::string, Method>& methods() {
  static const std::map<std::string, Method> table = {
      {"tv", {100, "total-variation regularised, no prior (any operator)"}},
      {"dps", {1000, "DPS, gradient through the network (any differentiable operator, also nonlinear)"}},
      {"diffpir", {100, "DiffPIR, operator prox (linear operators, sigma > 0)"}},
      {"ddrm", {20, "DDRM, in the operator's SVD (identity, inpainting, circular blur, circular SR)"}},
      {"latino", {8, "LATINO, prox + re-noise (linear operators, sigma > 0)"}},
      {"ud2m", {9, "UD2M, unrolled LATINO with a trained adapter (--adapter; NFE = N steps x K blocks, +N with a learned initialiser)"}},
      {"pnp-ncvsd", {49, "PnP-NCVSD, split Gibbs with an NCVSD generator as --model (sigma > 0; nonlinear operators by Langevin)"}},
  };
  return table;
}

std::string method_names() {
  std::string names;
  for (auto& [name, _] : methods()) names += (names.empty() ? "" : ", ") + name;
  return names;
}

struct RestoreArgs {
  std::string method = "tv";
  std::string measurement, sidecar, out, panel, reference, model, adapter;
  int ud2m_steps = -1, ud2m_blocks = -1;  // -1: the adapter's own N and K
  double noise_inflation = 0;             // 0: the adapter's own c
  int nfe = 0;  // 0: the method's default
  int samples = 1;
  std::string estimate = "mean";  // or "best-fit"
  uint64_t seed = 0;
  double tv_weight = 0.0;
  double dps_zeta = samplers::DpsOptions{}.zeta;
  double latino_delta = samplers::LatinoOptions{}.delta;
  samplers::LangevinOptions langevin;
  // PnP-NCVSD's annealing and likelihood (the published presets' knobs); < 0: the default.
  double pnp_rho = -1, pnp_ema_decay = -1, pnp_ema_below = -1, pnp_likelihood_sigma = -1, pnp_sigma_max = -1;
  std::optional<bool> fit_amplitudes;  // DPS and PnP-NCVSD; default: PnP-NCVSD on phase retrieval
  int bit_depth = 8;
  std::string precision = "fp32", device = "cpu";
  int tile = -1;  // twice the prior's training size
  // A measurement made outside ud2m, described instead of a sidecar.
  std::string task;
  double sigma = -1;
  std::map<std::string, std::string> task_options;
};

void check_folder_of(const std::string& path, const char* flag) {
  if (path.empty()) return;
  auto dir = fs::path(path).parent_path();
  UD2M_CHECK(dir.empty() || fs::is_directory(dir), "{} '{}': the folder '{}' does not exist", flag, path,
             dir.string());
}

const physics::LinearOperator& linear_operator(const Measurement& m, const std::string& method) {
  auto* linear = dynamic_cast<const physics::LinearOperator*>(m.degradation.op.get());
  UD2M_CHECK(linear, "{} needs a linear operator; '{}' is not linear (use dps or tv)", method, m.degradation.op->name());
  return *linear;
}

void check_noisy(const Measurement& m, const std::string& method) {
  UD2M_CHECK(m.degradation.noise.sigma > 0, "{} needs measurement noise sigma > 0 (the sidecar says {})", method,
             m.degradation.noise.sigma);
}

struct Restoration {
  std::vector<torch::Tensor> samples;  // model units
  nlohmann::json settings;
};

// Everything one restoration needs besides the measurement.
struct Context {
  const RestoreArgs& args;
  int nfe;
  std::shared_ptr<diffusion::Prior> prior;  // null for tv
  diffusion::DenoiserPtr denoiser;          // the prior (on its device), counting its evaluations
  Progress* progress;
  unrolled::LoadedAdapter adapter;  // ud2m only
  int ud2m_steps = 0;
  ncvsd::GeneratorNet generator{nullptr};  // pnp-ncvsd only
  std::optional<physics::TaskSpec> task;          // --task: no sidecar
};

Restoration restore_tv(const Context& c, const Measurement& m) {
  variational::TvOptions options;
  options.iterations = c.nfe;
  options.weight = c.args.tv_weight > 0 ? c.args.tv_weight : variational::default_tv_weight(m.degradation.noise.sigma);
  auto x = variational::tv_restore(*m.degradation.op, m.y, m.image_shape, options,
                                   [&](int, const torch::Tensor&) { c.progress->step(); });
  return {{x}, {{"tv_weight", options.weight}, {"iterations", options.iterations}}};
}

void check_prior_fits(const Context& c, const Measurement& m) {
  // Any size fits: the network's input is padded to the sides it needs (PaddedDenoiser).
  const int channels = c.prior ? c.prior->channels() : c.generator->channels();
  UD2M_CHECK(m.image_shape[1] == channels, "the model '{}' handles {}-channel images, the measurement {}",
             c.args.model, channels, m.image_shape[1]);
}

// What a likelihood-based sampler (DPS, PnP-NCVSD) fits: y and A(x), or
// intensities as amplitudes, √y against √A(x) (physics/square_root.hpp).
// PnP-NCVSD fits phase retrieval's amplitudes by default (its Langevin steps
// need their even curvature: README); DPS only when told (--fit-amplitudes
// true), the evidence for it being two validation crops.
struct Likelihood {
  physics::OperatorPtr op;
  torch::Tensor y;
  bool amplitudes;
};

Likelihood likelihood_to_fit(const RestoreArgs& args, const Measurement& m) {
  const auto& op = m.degradation.op;
  const bool amplitudes =
      args.fit_amplitudes.value_or(args.method == "pnp-ncvsd" && op->name() == "phase_retrieval");
  if (!amplitudes) return {op, m.y, false};
  UD2M_CHECK(!op->is_linear(), "--fit-amplitudes is for intensity measurements (phase retrieval), not '{}'",
             op->name());
  return {std::make_shared<physics::SquareRoot>(op), m.y.clamp_min(0).sqrt(), true};
}

// PnP-NCVSD's per-task preset: the likelihood σ' as a multiple of the
// measurement's σ, and the output EMA's decay. The published code keeps one
// per task for its FFHQ generator, σ' = √(β/2) at σ_y = 0.05 (presets/task/*.yaml):
// a published generator gets those. Ours (of either architecture) get the ones
// chosen on 12 validation crops for the shipped generator (README, "PnP-NCVSD's
// per-task presets").
struct PnpPreset {
  double likelihood_scale = 1;
  double ema_decay = samplers::PnpNcvsdOptions{}.ema_decay;
};

PnpPreset pnp_ncvsd_preset(const std::string& task, bool published_generator) {
  if (published_generator) {
    if (task == "gaussian_deblur") return {std::sqrt(2e-3 / 2) / 0.05};  // 0.63
    if (task == "motion_deblur") return {std::sqrt(3e-3 / 2) / 0.05};    // 0.77
    if (task == "sr") return {std::sqrt(1e-3 / 2) / 0.05};               // 0.45
    if (task == "inpainting_box") return {std::sqrt(1e-4 / 2) / 0.05, 0.2};
    return {};  // phase retrieval: its β is for amplitude data; ours are intensities (fitted as amplitudes of σ)
  }
  if (task == "gaussian_deblur") return {0.5};
  if (task == "sr") return {0.25};
  if (task == "jpeg") return {4};  // JPEG's quantisation error, not σ, dominates what y misses of x
  return {};
}

samplers::PnpNcvsdOptions pnp_ncvsd_options(const RestoreArgs& args, const Measurement& m, int nfe,
                                            bool published_generator) {
  samplers::PnpNcvsdOptions o;
  o.steps = nfe;
  o.langevin = args.langevin;
  // The published phase-retrieval preset averages the x0's only at the end.
  if (!m.degradation.op->is_linear()) o.ema_below = 0.2;
  const auto preset = pnp_ncvsd_preset(m.degradation.sidecar.value("task", ""), published_generator);
  o.likelihood_sigma = preset.likelihood_scale * m.degradation.noise.sigma;
  o.ema_decay = preset.ema_decay;
  if (args.pnp_rho >= 0) o.rho = args.pnp_rho;
  if (args.pnp_sigma_max >= 0) o.sigma_max = args.pnp_sigma_max;
  if (args.pnp_ema_decay >= 0) o.ema_decay = args.pnp_ema_decay;
  if (args.pnp_ema_below >= 0) o.ema_below = args.pnp_ema_below;
  if (args.pnp_likelihood_sigma >= 0)  // 0: the measurement's own (as in the sampler), written out for the report
    o.likelihood_sigma = args.pnp_likelihood_sigma > 0 ? args.pnp_likelihood_sigma : m.degradation.noise.sigma;
  return o;
}

// One posterior sample with the chosen diffusion sampler.
using Sampler = std::function<torch::Tensor(torch::Generator&, const samplers::StepCallback&)>;

std::pair<Sampler, nlohmann::json> make_sampler(const Context& c, const Measurement& m) {
  const auto& method = c.args.method;
  const double sigma = m.degradation.noise.sigma;
  if (method == "pnp-ncvsd") {
    auto& op = *m.degradation.op;
    check_noisy(m, "PnP-NCVSD");
    auto generator = c.generator;
    const auto o = pnp_ncvsd_options(c.args, m, c.nfe, generator->published());
    const int64_t multiple = generator->size_multiple();
    const auto tiling = tiling_for(c.args.tile, generator->image_size(), multiple);
    // The generator runs where it was placed (--device); the sampler and the operator stay on the CPU.
    const auto device = generator->parameters().front().device();
    samplers::GenerativeDenoiser g = [generator, multiple, tiling, device](const torch::Tensor& u, double level,
                                                                           torch::Generator& rng) mutable {
      auto padded = diffusion::pad_to_multiple(u, multiple).to(device);
      auto x = ncvsd::generate(*generator, padded, torch::full({u.size(0)}, level, padded.options()), rng, tiling);
      return diffusion::crop_to(x, u.size(-2), u.size(-1)).to(u.device());
    };
    const auto fit = likelihood_to_fit(c.args, m);
    return {[&m, fit, o, sigma, g](torch::Generator& rng, const samplers::StepCallback& cb) {
              return samplers::pnp_ncvsd(g, *fit.op, fit.y, sigma, m.image_shape, o, rng, cb);
            },
            {{"sigma_min", o.sigma_min}, {"sigma_max", o.sigma_max}, {"rho", o.rho}, {"ema_decay", o.ema_decay},
             {"ema_below", o.ema_below}, {"likelihood_sigma", o.likelihood_sigma},
             {"fit_amplitudes", fit.amplitudes},
             {"likelihood_step", op.is_linear() ? "perturb-and-MAP (exact)" : "unadjusted Langevin"},
             {"langevin",
              {{"steps", o.langevin.steps},
               {"tau", o.langevin.tau},
               {"preconditioned", o.langevin.precondition && fit.op->langevin_preconditioner(
                                                            m.y.new_zeros(m.image_shape), 1, 1).has_value()}}}}};
  }
  auto& prior = *c.denoiser;
  if (method == "diffpir") {
    auto& op = linear_operator(m, "DiffPIR");
    check_noisy(m, "DiffPIR");
    samplers::DiffPirOptions o;
    o.steps = c.nfe;
    return {[&, o, sigma](torch::Generator& rng, const samplers::StepCallback& cb) {
              return samplers::diffpir(prior, op, m.y, sigma, o, rng, cb);
            },
            {{"zeta", o.zeta}, {"lambda", o.lambda}}};
  }
  if (method == "ddrm") {
    samplers::DdrmOptions o;
    o.steps = c.nfe;
    return {[&, o, sigma](torch::Generator& rng, const samplers::StepCallback& cb) {
              return samplers::ddrm(prior, *m.degradation.op, m.y, sigma, o, rng, cb);
            },
            {{"eta", o.eta}, {"eta_b", o.eta_b}}};
  }
  if (method == "dps") {
    samplers::DpsOptions o;
    o.steps = c.nfe;
    o.zeta = c.args.dps_zeta;
    const auto fit = likelihood_to_fit(c.args, m);
    return {[&, o, fit](torch::Generator& rng, const samplers::StepCallback& cb) {
              return samplers::dps(prior, *fit.op, fit.y, m.image_shape, o, rng, cb);
            },
            {{"zeta", o.zeta}, {"fit_amplitudes", fit.amplitudes}}};
  }
  if (method == "ud2m") {
    auto& op = *m.degradation.op;  // linear, or JPEG (unrolled::initial_estimate refuses others)
    check_noisy(m, "UD2M");
    const auto task = m.degradation.sidecar.value("task", "");
    UD2M_CHECK(c.adapter.info.fits(task),
               "the adapter '{}' was trained for {}, not for this {} measurement; use a general-operator adapter",
               c.args.adapter, c.adapter.info.task, task.empty() ? "custom-operator" : task);
    unrolled::SamplerOptions o;
    o.steps = c.ud2m_steps;
    auto& network = *c.adapter.network;
    return {[&, o, sigma](torch::Generator& rng, const samplers::StepCallback& cb) {
              return unrolled::sample(network, op, m.y, sigma, m.image_shape, o, rng, cb);
            },
            {{"adapter", c.args.adapter}, {"steps", o.steps}, {"blocks", network.options().blocks},
             {"eta", o.eta}, {"adapter_task", c.adapter.info.task},
             {"noise_inflation", network.options().noise_inflation},
             {"learned_init", network.options().learned_init}}};
  }
  auto& op = linear_operator(m, "LATINO");
  check_noisy(m, "LATINO");
  samplers::LatinoOptions o;
  o.steps = c.nfe;
  o.delta = c.args.latino_delta;
  return {[&, o, sigma](torch::Generator& rng, const samplers::StepCallback& cb) {
            return samplers::latino(prior, op, m.y, sigma, o, rng, cb);
          },
          {{"delta", o.delta}}};
}

// The prior, ticking the progress bar at each network evaluation (what NFE
// counts): a UD2M step holds K of them, the other samplers' steps one each.
class CountedDenoiser : public diffusion::Denoiser {
 public:
  CountedDenoiser(diffusion::DenoiserPtr inner, Progress& progress) : inner_(std::move(inner)), progress_(progress) {}
  torch::Tensor epsilon(const torch::Tensor& x_t, const torch::Tensor& t) override {
    auto epsilon = inner_->epsilon(x_t, t);
    progress_.step();
    return epsilon;
  }
  const diffusion::Schedule& schedule() const override { return inner_->schedule(); }

 private:
  diffusion::DenoiserPtr inner_;
  Progress& progress_;
};

Restoration restore_diffusion(const Context& c, const Measurement& m) {
  check_prior_fits(c, m);
  auto [sample, settings] = make_sampler(c, m);
  settings.update({{"model", c.args.model}, {"nfe", c.nfe}, {"seed", c.args.seed}});
  auto rng = at::make_generator<at::CPUGeneratorImpl>(c.args.seed);
  Restoration r{{}, settings};
  for (int s = 0; s < c.args.samples; ++s) {
    auto x = sample(rng, [&](int step, int t, const torch::Tensor& x0) {
      UD2M_CHECK(torch::isfinite(x0).all().item<bool>(),
                 "{} produced NaN or infinite values at step {} (timestep {}) of sample {}", c.args.method, step + 1,
                 t, s + 1);
      if (!c.prior) c.progress->step();  // the generator's evaluations; a prior's tick in CountedDenoiser
    });
    r.samples.push_back(x.clamp(-1, 1));
  }
  return r;
}

// Measurement | a few samples | mean | std map | reference.
void write_restore_panel(const std::string& path, const Measurement& m, const torch::Tensor& stack,
                         const torch::Tensor& restored, const torch::Tensor& reference, const std::string& method,
                         const std::string& estimate) {
  std::vector<PanelItem> items;
  if (m.y.dim() == 4 && (m.y.size(1) == 1 || m.y.size(1) == 3) && m.y.size(2) > 1)  // not a matrix's (N, C, 1, M)
    items.push_back({"measurement", from_model(m.y)});
  const int64_t n = stack.size(0);
  for (int64_t i = 0; i < std::min<int64_t>(n, 3) && n > 1; ++i)
    items.push_back({"sample " + std::to_string(i + 1), stack.slice(0, i, i + 1)});
  items.push_back({n > 1 ? estimate : method, restored});
  if (n > 1) items.push_back({"std (x4)", (4 * stack.std(0, /*unbiased=*/true, /*keepdim=*/true).mean(1, true)).clamp(0, 1)});
  if (reference.defined()) items.push_back({"reference", reference});
  write_png(path, make_panel(items));
}

struct Job {
  std::string measurement, out, panel, reference;
};

nlohmann::json restore_one(const Context& c, const Job& job) {
  auto m = load_measurement(job.measurement, c.args.sidecar, c.task);
  torch::Tensor reference;
  if (!job.reference.empty()) {
    reference = read_image(job.reference, static_cast<int>(m.image_shape[1]));
    UD2M_CHECK(reference.sizes().vec() == m.image_shape, "--reference '{}' is {} but the restored image will be {}",
               job.reference, fmt::join(reference.sizes(), "x"), fmt::join(m.image_shape, "x"));
  }
  const auto start = std::chrono::steady_clock::now();
  auto r = c.args.method == "tv" ? restore_tv(c, m) : restore_diffusion(c, m);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // Several samples: the posterior mean (or the best fit) is the estimate, their spread the uncertainty.
  auto stack = from_model(torch::cat(r.samples)).clamp(0, 1);
  auto restored = stack.mean(0, true);
  nlohmann::json report = {{"method", c.args.method}, {"measurement", job.measurement}, {"seconds", seconds},
                           {"samples", c.args.samples}, {"task", m.degradation.sidecar.value("task", "")},
                           {"sigma", m.degradation.noise.sigma}, {"settings", r.settings},
                           {"precision", c.args.precision}, {"device", c.args.device},
                           {"estimate", c.args.estimate}};
  if (c.args.estimate == "best-fit") {
    std::vector<double> residuals;
    torch::NoGradGuard no_grad;
    for (auto& x : r.samples) residuals.push_back((m.degradation.op->forward(x) - m.y).norm().item<double>());
    const auto best = std::min_element(residuals.begin(), residuals.end()) - residuals.begin();
    restored = stack.slice(0, best, best + 1);
    report["fit_residuals"] = residuals;  // ‖A(x) − y‖ per sample, model units
    report["best_sample"] = best;
  }
  if (reference.defined()) {
    report["reference"] = job.reference;
    report["psnr"] = metrics::psnr(restored, reference);
    log::info("{}: PSNR {:.2f} dB", job.measurement, report["psnr"].get<double>());
    if (stack.size(0) >= 2) {
      // Calibration: how often the truth falls in the samples' central 90 % interval.
      report["coverage_90"] = metrics::credible_coverage(stack.squeeze(1), reference[0], 0.9);
      report["mean_std"] = metrics::posterior_std(stack).mean().item<double>();
      log::info("{}: 90 % credible intervals cover {:.1f} % of the reference pixels (mean posterior std {:.4f})",
                job.measurement, 100 * report["coverage_90"].get<double>(), report["mean_std"].get<double>());
    }
  }
  write_png(job.out, restored, c.args.bit_depth);
  write_file_atomic(replace_extension(job.out, ".json"), report.dump(2) + "\n");
  if (!job.panel.empty())
    write_restore_panel(job.panel, m, stack, restored, reference, c.args.method,
                        c.args.estimate == "mean" ? "posterior mean" : "best fit");
  return report;
}

bool is_measurement_file(const fs::path& p) {
  for (const char* ext : {".png", ".jpg", ".jpeg", ".safetensors"})
    if (has_extension(p.string(), ext)) return true;
  return false;
}

// A folder of measurements: one job each, outputs named after the inputs.
std::vector<Job> folder_jobs(const RestoreArgs& args) {
  UD2M_CHECK(args.sidecar.empty(), "--sidecar names one file; with a folder of measurements each has its own");
  std::vector<fs::path> inputs;
  for (auto& entry : fs::directory_iterator(args.measurement))
    if (entry.is_regular_file() && is_measurement_file(entry.path())) inputs.push_back(entry.path());
  std::sort(inputs.begin(), inputs.end());
  UD2M_CHECK(!inputs.empty(), "the folder '{}' holds no measurement (.png, .jpg, .safetensors)", args.measurement);
  fs::create_directories(args.out);
  if (!args.panel.empty()) fs::create_directories(args.panel);
  std::vector<Job> jobs;
  for (auto& in : inputs) {
    const auto stem = in.stem().string();
    Job job{in.string(), (fs::path(args.out) / (stem + ".png")).string(), "", ""};
    if (!args.panel.empty()) job.panel = (fs::path(args.panel) / (stem + ".png")).string();
    if (!args.reference.empty()) {
      for (const char* ext : {".png", ".jpg", ".jpeg"})
        if (auto ref = fs::path(args.reference) / (stem + ext); fs::exists(ref)) job.reference = ref.string();
      UD2M_CHECK(!job.reference.empty(), "no reference image named '{}' in '{}'", stem, args.reference);
    }
    jobs.push_back(job);
  }
  return jobs;
}

// --task (+ --sigma and the task's flags) in place of a sidecar. Tasks that
// draw their mask or kernel from a seed cannot describe a real measurement.
std::optional<physics::TaskSpec> described_task(const RestoreArgs& args) {
  if (args.task.empty()) {
    UD2M_CHECK(args.sigma < 0 && args.task_options.empty(),
               "--sigma and the task flags describe a measurement together with --task; without --task the "
               "sidecar describes it");
    return std::nullopt;
  }
  UD2M_CHECK(args.sidecar.empty(), "--task describes the measurement in place of a sidecar: pass one or the other");
  UD2M_CHECK(!physics::task_draws_from_seed(args.task),  // unknown task -> error listing the valid ones
             "task '{}' draws its mask or kernel from a seed, so it cannot describe a measurement made elsewhere: "
             "restore the measurement with the sidecar `ud2m degrade` wrote, or describe it with "
             "inpainting_mask --mask FILE or kernel_deblur --kernel FILE",
             args.task);
  UD2M_CHECK(args.sigma >= 0, "--task needs --sigma: the measurement's noise std in [0, 1] image units");
  return physics::TaskSpec{args.task, args.sigma, 0, args.task_options};
}

void run_restore(const RestoreArgs& args, bool nfe_given) {
  auto method = methods().find(args.method);
  UD2M_CHECK(method != methods().end(), "unknown --method '{}'; available: {}", args.method, method_names());
  UD2M_CHECK(!nfe_given || args.nfe > 0, "--nfe must be positive, not {}", args.nfe);
  UD2M_CHECK(args.samples > 0, "--samples must be positive, not {}", args.samples);
  UD2M_CHECK(args.method == "tv" || !args.model.empty(), "--method {} needs a {}: --model FILE", args.method,
             args.method == "pnp-ncvsd" ? "generator (from `ud2m train --method ncvsd`)" : "prior");
  UD2M_CHECK(!args.fit_amplitudes || args.method == "dps" || args.method == "pnp-ncvsd",
             "--fit-amplitudes applies to dps and pnp-ncvsd, not {}", args.method);
  const auto task = described_task(args);
  const bool folder = fs::is_directory(args.measurement);
  std::vector<Job> jobs;
  if (folder) {
    jobs = folder_jobs(args);
  } else {
    check_folder_of(args.out, "--out");
    check_folder_of(args.panel, "--panel");
    jobs.push_back({args.measurement, args.out, args.panel, args.reference});
  }
  int nfe = nfe_given ? args.nfe : method->second.default_nfe;
  std::shared_ptr<diffusion::Prior> prior;
  ncvsd::GeneratorNet generator{nullptr};
  if (args.method == "pnp-ncvsd") {
    generator = ncvsd::load_generator(args.model);
    check_pixel_model(generator->latent_space(), args.model, "restore");
  } else if (args.method != "tv") {
    prior = diffusion::load_prior(args.model);
    check_pixel_model(prior->latent_space(), args.model, "restore");
  }
  unrolled::LoadedAdapter adapter;
  int progress_per_sample = nfe, ud2m_steps = 0;
  if (args.method == "ud2m") {
    UD2M_CHECK(!nfe_given, "UD2M's cost is set by --steps N and --blocks K (NFE = N x K, or N x (K+1) with a "
                           "learned initialiser), not --nfe");
    UD2M_CHECK(!args.adapter.empty(), "--method ud2m needs an adapter: --adapter FILE");
    UD2M_CHECK(args.ud2m_steps == -1 || args.ud2m_steps > 0, "--steps N must be positive, not {}", args.ud2m_steps);
    UD2M_CHECK(args.ud2m_blocks == -1 || args.ud2m_blocks > 0, "--blocks K must be positive, not {}",
               args.ud2m_blocks);
    adapter = unrolled::load_adapter(args.adapter, prior, args.model);
    adapter.network->fold_lora();  // restoring trains nothing: run at the base network's cost
    if (args.ud2m_blocks > 0) adapter.network->set_blocks(args.ud2m_blocks);
    if (args.noise_inflation != 0) adapter.network->set_noise_inflation(args.noise_inflation);
    ud2m_steps = args.ud2m_steps > 0 ? args.ud2m_steps : adapter.info.steps;
    nfe = ud2m_steps * adapter.network->evaluations();
    progress_per_sample = ud2m_steps * adapter.network->options().blocks;  // prior evaluations
  }
  UD2M_CHECK(prior || generator || args.precision == "fp32",
             "--precision {} applies to the methods that run a network, not {}", args.precision, args.method);
  UD2M_CHECK(prior || generator || args.device == "cpu",
             "--device {} applies to the methods that run a network, not {}", args.device, args.method);
  if (generator) place_generator(generator, args.device, args.precision);
  const int samples = args.method == "tv" ? 1 : args.samples;
  Progress progress("restore (" + args.method + ")", progress_per_sample * samples * static_cast<int>(jobs.size()));
  diffusion::DenoiserPtr denoiser;
  if (prior) {
    // after the fold: LoRA goes in at full precision
    denoiser = std::make_shared<CountedDenoiser>(
        prior_denoiser(prior, place_prior(*prior, args.device, args.precision), args.tile), progress);
    if (adapter.network) adapter.network->set_denoiser(denoiser);
  }
  Context context{args, nfe, prior, denoiser, &progress, adapter, ud2m_steps, generator, task};
  std::vector<double> psnrs;
  for (auto& job : jobs) {
    auto report = restore_one(context, job);
    if (report.contains("psnr")) psnrs.push_back(report["psnr"].get<double>());
    if (!folder) log::info("wrote '{}' ({:.1f} s)", job.out, report["seconds"].get<double>());
  }
  if (folder) {
    log::info("restored {} measurements into '{}' ({:.1f} s)", jobs.size(), args.out, progress.elapsed_seconds());
    if (!psnrs.empty())
      log::info("mean PSNR {:.2f} dB over {} images", std::accumulate(psnrs.begin(), psnrs.end(), 0.0) / psnrs.size(),
                psnrs.size());
  }
}

}  // namespace

void add_restore_command(CLI::App& app) {
  auto args = std::make_shared<RestoreArgs>();
  auto* cmd = app.add_subcommand("restore", "Restore an image (or a folder of them) from measurements made by `ud2m degrade`, or from any photograph described by --task.");
  cmd->add_option("--measurement,-m", args->measurement,
                  "Measurement: PNG/JPEG with a JSON sidecar (or described by --task), or .safetensors (exact values, sidecar "
                  "inside); or a "
                  "folder of them")
      ->required()
      ->check(CLI::ExistingPath);
  cmd->add_option("--sidecar", args->sidecar, "Sidecar JSON describing the degradation (default: beside the measurement)");
  cmd->add_option("--task", args->task,
                  "Describe the degradation instead of a sidecar, for a measurement made elsewhere (a real "
                  "photograph): a task of `ud2m degrade` (not the seeded inpainting_random / motion_deblur; use "
                  "inpainting_mask --mask, kernel_deblur --kernel), with --sigma and the task's flags (--factor, "
                  "--kernel-std, --quality, ...); the image size follows from the measurement's");
  cmd->add_option("--sigma", args->sigma, "With --task: the measurement's Gaussian noise std in [0, 1] image units");
  add_task_flags(*cmd, args->task_options);
  cmd->add_option("--out,-o", args->out, "Restored image (PNG; the posterior mean when --samples > 1), or a folder "
                  "for a folder of measurements; a JSON report is written beside each")->required();
  std::string method_help = "Method:";
  for (auto& [name, m] : methods())
    method_help += "\n  " + name + ": " + m.summary + " (default NFE " + std::to_string(m.default_nfe) + ")";
  cmd->add_option("--method", args->method, method_help)->capture_default_str();
  cmd->add_option("--model", args->model, "Diffusion prior (ud2m file, original checkpoint, diffusers folder); for pnp-ncvsd an NCVSD "
                 "generator (from `train --method ncvsd`, or NCVSD's network pickle .pkl)");
  auto* nfe = cmd->add_option("--nfe", args->nfe, "Network evaluations per sample (TV: iterations); default: the "
                              "method's published setting");
  cmd->add_option("--samples", args->samples, "Posterior samples; the output is their mean, the panel shows their std")
      ->capture_default_str();
  cmd->add_option("--estimate", args->estimate,
                  "With several samples: their mean, or best-fit: the sample whose A(x) is closest to y (the "
                  "published phase-retrieval protocol's best of 4, judged by the data)")
      ->check(CLI::IsMember({"mean", "best-fit"}))
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed of the sampler's noise")->capture_default_str();
  add_precision_option(*cmd, args->precision);
  add_device_option(*cmd, args->device);
  add_tile_option(*cmd, args->tile);
  cmd->add_option("--panel", args->panel, "Also write a side-by-side PNG: measurement | samples | mean | std | "
                  "reference (a folder for a folder of measurements)");
  cmd->add_option("--reference", args->reference, "Ground-truth image (or folder, matched by name): report PSNR and "
                  "add it to the panel")->check(CLI::ExistingPath);
  cmd->add_option("--tv-weight", args->tv_weight, "TV weight λ in [-1,1] units (default: chosen from the noise level)");
  cmd->add_option("--adapter", args->adapter, "UD2M adapter file (trained on --model)")->check(CLI::ExistingFile);
  cmd->add_option("--steps", args->ud2m_steps, "UD2M sampling steps N (default: the adapter's)");
  cmd->add_option("--blocks", args->ud2m_blocks, "UD2M unrolled blocks K (default: the adapter's)");
  cmd->add_option("--noise-inflation", args->noise_inflation,
                  "UD2M: factor c on σ_y in the re-noising level (default: the adapter's)");
  cmd->add_option("--dps-zeta", args->dps_zeta, "DPS step on the residual norm's gradient")->capture_default_str();
  cmd->add_option("--langevin-steps", args->langevin.steps,
                  "PnP-NCVSD, nonlinear operators: Langevin steps per likelihood step")->capture_default_str();
  cmd->add_option("--langevin-tau", args->langevin.tau,
                  "PnP-NCVSD, nonlinear operators: Langevin step as a fraction of the stiffest direction's scale "
                  "(0 < tau < 1)")->capture_default_str();
  cmd->add_option("--langevin-precondition", args->langevin.precondition,
                  "PnP-NCVSD: preconditioned, Metropolis-adjusted Langevin where the operator offers a "
                  "preconditioner (phase retrieval with --fit-amplitudes false: its Fourier curvature; true/false; "
                  "experimental)")
      ->capture_default_str();
  cmd->add_option("--pnp-rho", args->pnp_rho,
                  "PnP-NCVSD: the Karras grid's rho (larger: more steps at low noise; default 2)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--pnp-sigma-max", args->pnp_sigma_max,
                  "PnP-NCVSD: the noise level the chain starts at, u = sigma_max * z (model units; default 80, "
                  "as published)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--pnp-ema-decay", args->pnp_ema_decay,
                  "PnP-NCVSD: the output averages the x0's as avg <- d*avg + (1-d)*x0 (0: the last x0; default 0.6)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--pnp-ema-below", args->pnp_ema_below,
                  "PnP-NCVSD: average only once the noise level is below this (default 100; nonlinear operators 0.2)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--pnp-likelihood-sigma", args->pnp_likelihood_sigma,
                  "PnP-NCVSD: noise std the likelihood step assumes, in [0, 1] image units (0: the measurement's own; "
                  "default: the task's preset, as the published code: 0.5x the measurement's for gaussian_deblur, "
                  "0.25x for sr, 4x for jpeg, 1x otherwise)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--fit-amplitudes", args->fit_amplitudes,
                  "DPS and PnP-NCVSD on intensity measurements: fit the amplitudes sqrt(y) with sqrt(A(x)) "
                  "(--pnp-likelihood-sigma then in amplitude units; true/false; default: true for pnp-ncvsd on "
                  "phase_retrieval)");
  cmd->add_option("--latino-delta", args->latino_delta, "LATINO prox step scale δ")->capture_default_str();
  cmd->add_option("--bit-depth", args->bit_depth, "PNG bit depth of the output: 8 or 16")
      ->check(CLI::IsMember({8, 16}))
      ->capture_default_str();
  cmd->callback([args, nfe] { run_restore(*args, nfe->count() > 0); });
}

}  // namespace ud2m::cli
