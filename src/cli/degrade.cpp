// `ud2m degrade`: make a synthetic measurement y = A(x) + n from a clean image,
// plus the JSON sidecar that lets `restore` rebuild A and the noise exactly.
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "cli/commands.hpp"
#include "cli/measurement.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "core/paths.hpp"
#include "io/safetensors.hpp"
#include "physics/degradation.hpp"
#include "physics/matrix.hpp"

namespace ud2m::cli {

namespace {

struct DegradeArgs {
  std::string task, input, output;
  double sigma = 0.01;
  uint64_t seed = 0;
  std::map<std::string, std::string> flags;  // task options as given, by flag name
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void run_degrade(const DegradeArgs& args) {
  // Everything is checked and computed in memory first: a failure leaves no file behind.
  physics::TaskSpec spec{args.task, args.sigma, args.seed, args.flags};
  physics::task_options(spec.task);  // unknown task -> error listing the valid ones
  UD2M_CHECK(args.sigma >= 0, "--sigma must be non-negative, not {}", args.sigma);
  const bool to_tensor = ends_with(args.output, ".safetensors");
  UD2M_CHECK(to_tensor || ends_with(args.output, ".png"),
             "output {} must end in .png (an image) or .safetensors (the exact measurement)", args.output);
  // Fourier intensities and a matrix's A·v are no images.
  const bool measures_an_image =
      spec.task != "phase_retrieval" && spec.task != "random_phase_retrieval" && spec.task != "matrix";
  UD2M_CHECK(to_tensor || measures_an_image,
             "task '{}' does not measure an image: write it to a .safetensors file, not {}", spec.task, args.output);

  auto image = read_image(args.input, 0);
  auto degradation = physics::make_degradation(spec, image.sizes().vec());
  torch::NoGradGuard no_grad;
  auto y = degradation.op->measure(to_model(image));
  auto rng = at::make_generator<at::CPUGeneratorImpl>(physics::noise_seed(args.seed));
  y = physics::measurement_from_model(*degradation.op, degradation.noise.add(y, rng));

  auto sidecar = degradation.sidecar;
  const char* encoding = spec.task == "matrix" ? "safetensors float32, key y: A·v of the image v in [0, 1]"
                         : to_tensor             ? "safetensors float32, model units [-1, 1], key y"
                                                 : "png 8-bit, [0, 1] image units (clipped)";
  sidecar["measurement"] = {{"file", std::filesystem::path(args.output).filename().string()}, {"encoding", encoding}};
  std::string bytes = to_tensor ? serialize_safetensors({{"y", y.contiguous()}}, {{"ud2m_sidecar", sidecar.dump()}})
                                : encode_png(from_model(y)[0]);
  const auto json_path = replace_extension(args.output, ".json");
  write_file_atomic(json_path, sidecar.dump(2) + "\n");
  try {
    write_file_atomic(args.output, bytes);
  } catch (...) {
    std::filesystem::remove(json_path);
    throw;
  }
  std::printf("%s: %s, sigma %g, seed %llu -> %s (+ %s)\n", args.input.c_str(), spec.task.c_str(), args.sigma,
              static_cast<unsigned long long>(args.seed), args.output.c_str(), json_path.c_str());
}

std::string task_list() {
  return "Tasks (defaults in brackets):\n"
         "  denoise                  A = I\n"
         "  gaussian_deblur          Gaussian blur [--kernel-size 5 --kernel-std 1.7320508 (variance 3)]\n"
         "  uniform_deblur           box blur [--kernel-size 5]\n"
         "  motion_deblur            random camera-shake PSF from --seed (Matern GP trajectory, l 0.3, sigma 0.25)\n"
         "                           [--kernel-size 31]\n"
         "  kernel_deblur            blur with --kernel FILE (gray PNG/JPEG or safetensors, normalised to sum 1)\n"
         "                           (all blurs: [--boundary circular]; reflect keeps the size, valid shrinks it)\n"
         "  sr                       anti-aliasing filter + decimation [--factor 4 --filter bicubic]\n"
         "  inpainting_random        random missing pixels from --seed [--fraction 0.7 (missing)]\n"
         "  inpainting_box           centred missing box [--box-size H/2xW/2]\n"
         "  inpainting_mask          --mask FILE (white = observed; same size as the image)\n"
         "  jpeg                     libjpeg compression [--quality 10]\n"
         "  phase_retrieval          |FFT(zero-padded x)|^2 per channel [--oversampling 2]; .safetensors output\n"
         "  random_phase_retrieval   the same after a random unit-modulus phase mask from --seed\n"
         "  matrix                   your own linear operator: y = A x with --matrix FILE (.safetensors: 'matrix'\n"
         "                           (M, N), or sparse 'indices' (2, nnz), 'values', 'shape'); N = H*W acts on\n"
         "                           each channel, N = C*H*W on the whole image (row-major); y = A v of the image\n"
         "                           v in [0, 1], shape (1, C or 1, 1, M); .safetensors output\n"
         "Writes OUT (.png image, or .safetensors: the exact float measurement under key 'y', in [-1, 1] model\n"
         "units except the matrix task's A v) and the sidecar (OUT with its extension replaced by .json), from\n"
         "which `ud2m restore` rebuilds the operator and noise exactly. Nothing is written if any check fails.";
}

}  // namespace

void add_degrade_command(CLI::App& app) {
  auto args = std::make_shared<DegradeArgs>();
  auto* cmd = app.add_subcommand("degrade", "Simulate a measurement y = A(x) + noise from a clean image.");
  cmd->footer(task_list());
  cmd->add_option("--task", args->task, "degradation: " + fmt::format("{}", fmt::join(physics::task_names(), ", ")))
      ->required();
  cmd->add_option("--sigma", args->sigma, "Gaussian noise std in [0, 1] image units")->capture_default_str();
  cmd->add_option("--seed", args->seed, "seed of every random choice (mask, motion kernel, noise)")
      ->capture_default_str();
  add_task_flags(*cmd, args->flags);
  cmd->add_option("IN", args->input, "clean image (PNG or JPEG)")->required();
  cmd->add_option("OUT", args->output, "measurement: .png or .safetensors")->required();
  cmd->callback([args] { run_degrade(*args); });
}

}  // namespace ud2m::cli
