// ud2m demo: degrade the bundled example image and restore it, writing a
// side-by-side panel. The one command a new user runs first.
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>

#include "cli/commands.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "core/log.hpp"
#include "core/panel.hpp"
#include "core/progress.hpp"
#include "metrics/metrics.hpp"
#include "physics/degradation.hpp"
#include "variational/tv.hpp"

namespace ud2m::cli {
namespace {

struct DemoArgs {
  std::string image = std::string(UD2M_ASSETS_DIR) + "/astronaut_256.png";
  std::string task = "gaussian_deblur";
  double sigma = 0.01;
  uint64_t seed = 0;
  std::string out_dir = "demo_out";
};

void run_demo(const DemoArgs& args) {
  std::filesystem::create_directories(args.out_dir);
  auto clean = read_image(args.image);
  physics::TaskSpec spec{args.task, args.sigma, args.seed, {}};
  auto degradation = physics::make_degradation(spec, clean.sizes().vec());
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
  auto restored = from_model(x).clamp(0, 1);
  write_png((dir / "restored.png").string(), restored);

  const bool same_size = y.sizes() == clean.sizes();
  const double psnr_y = same_size ? metrics::psnr(from_model(y).clamp(0, 1), clean) : 0.0;
  const double psnr_x = metrics::psnr(restored, clean);
  auto panel = make_panel({{same_size ? fmt::format("measurement {:.2f} dB", psnr_y) : "measurement", from_model(y)},
                           {fmt::format("TV {:.2f} dB", psnr_x), restored},
                           {"ground truth", clean}});
  write_png((dir / "panel.png").string(), panel);
  const auto measured = same_size ? fmt::format("measurement {:.2f} dB -> ", psnr_y) : std::string();
  log::info("{} (sigma {}): {}TV {:.2f} dB PSNR; panel: {}", args.task, args.sigma, measured, psnr_x,
            (dir / "panel.png").string());
}

}  // namespace

void add_demo_command(CLI::App& app) {
  auto args = std::make_shared<DemoArgs>();
  auto* cmd = app.add_subcommand(
      "demo", "Degrade the bundled example image and restore it; writes measurement, restored image and panel.");
  cmd->add_option("--image", args->image, "Clean image to degrade")->check(CLI::ExistingFile)->capture_default_str();
  cmd->add_option("--task", args->task, "Degradation task (see `ud2m degrade --help`)")->capture_default_str();
  cmd->add_option("--sigma", args->sigma, "Measurement noise std in [0,1] image units")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed of every random choice")->capture_default_str();
  cmd->add_option("--out-dir", args->out_dir, "Folder for the outputs")->capture_default_str();
  cmd->callback([args] { run_demo(*args); });
}

}  // namespace ud2m::cli
