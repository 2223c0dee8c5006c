// ud2m restore: measurement (+ sidecar) -> restored image, panel, JSON report.
#include <chrono>
#include <filesystem>

#include "cli/commands.hpp"
#include "cli/measurement.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "core/log.hpp"
#include "core/panel.hpp"
#include "core/progress.hpp"
#include "metrics/metrics.hpp"
#include "variational/tv.hpp"

namespace ud2m::cli {
namespace {

struct RestoreArgs {
  std::string method = "tv";
  std::string measurement, sidecar, out, panel, reference;
  int iterations = 100;
  double tv_weight = 0.0;
  int bit_depth = 8;
};

void check_writable(const std::string& path, const char* flag) {
  if (path.empty()) return;
  auto dir = std::filesystem::path(path).parent_path();
  UD2M_CHECK(dir.empty() || std::filesystem::is_directory(dir), "{} '{}': the folder '{}' does not exist", flag,
             path, dir.string());
}

void run_restore(const RestoreArgs& args) {
  UD2M_CHECK(args.method == "tv", "unknown --method '{}'; available: tv", args.method);
  check_writable(args.out, "--out");
  check_writable(args.panel, "--panel");
  auto m = load_measurement(args.measurement, args.sidecar);
  torch::Tensor reference;
  if (!args.reference.empty()) {
    reference = read_image(args.reference, static_cast<int>(m.image_shape[1]));
    UD2M_CHECK(reference.sizes().vec() == m.image_shape, "--reference '{}' is {} but the restored image will be {}",
               args.reference, fmt::join(reference.sizes(), "x"), fmt::join(m.image_shape, "x"));
  }

  variational::TvOptions options;
  options.iterations = args.iterations;
  options.weight = args.tv_weight > 0 ? args.tv_weight : variational::default_tv_weight(m.degradation.noise.sigma);
  torch::Tensor x;
  double seconds;
  {
    Progress progress("restore (tv)", options.iterations);
    x = variational::tv_restore(*m.degradation.op, m.y, m.image_shape, options,
                                [&](int, const torch::Tensor&) { progress.step(); });
    seconds = progress.elapsed_seconds();
  }
  auto restored = from_model(x).clamp(0, 1);

  nlohmann::json report = {{"method", "tv"},
                           {"measurement", args.measurement},
                           {"tv_weight", options.weight},
                           {"iterations", options.iterations},
                           {"seconds", seconds},
                           {"task", m.degradation.sidecar.value("task", "")},
                           {"sigma", m.degradation.noise.sigma}};
  if (reference.defined()) {
    report["psnr"] = metrics::psnr(restored, reference);
    log::info("PSNR against '{}': {:.2f} dB", args.reference, report["psnr"].get<double>());
  }
  write_png(args.out, restored, args.bit_depth);
  write_file_atomic(replace_extension(args.out, ".json"), report.dump(2) + "\n");
  if (!args.panel.empty()) {
    std::vector<PanelItem> items{{"measurement", from_model(m.y)}, {"tv restored", restored}};
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
  cmd->add_option("--out,-o", args->out, "Restored image (PNG); a JSON report is written beside it")->required();
  cmd->add_option("--method", args->method, "Restoration method: tv (total-variation regularised, non-learned)")
      ->capture_default_str();
  cmd->add_option("--panel", args->panel, "Also write a side-by-side PNG: measurement | restored | reference");
  cmd->add_option("--reference", args->reference, "Ground-truth image: report PSNR and add it to the panel")
      ->check(CLI::ExistingFile);
  cmd->add_option("--iterations", args->iterations, "Iterations of the solver")->capture_default_str();
  cmd->add_option("--tv-weight", args->tv_weight, "TV weight λ in [-1,1] units (default: chosen from the noise level)");
  cmd->add_option("--bit-depth", args->bit_depth, "PNG bit depth of the output: 8 or 16")
      ->check(CLI::IsMember({8, 16}))
      ->capture_default_str();
  cmd->callback([args] { run_restore(*args); });
}

}  // namespace ud2m::cli
