// A degradation = operator + noise + the JSON sidecar that rebuilds both
// exactly. `ud2m degrade` makes one from a task name and flags; `restore`
// rebuilds it from the sidecar.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "physics/operator.hpp"

namespace ud2m::physics {

struct TaskSpec {
  std::string task;    // one of task_names()
  double sigma = 0.0;  // Gaussian noise std in [0, 1] image units
  uint64_t seed = 0;   // every random choice (mask, motion kernel, noise) derives from it
  std::map<std::string, std::string> options;  // task-specific settings (kernel size, factor, ...)
};

// The sidecar (format_version 1) is a JSON object:
//   format "ud2m-degradation", format_version, task, sigma ([0, 1] units), seed,
//   noise_seed (the noise generator's seed, noise_seed(seed)), options (the task
//   options as given), input_shape and measurement_shape (N, C, H, W), and
//   operator: op->to_json(), which holds every value needed to rebuild the
//   operator without the original files or random draws (kernel values, mask
//   bits, sizes; only the phase-retrieval phase mask is regenerated from its seed).
// `ud2m degrade` adds measurement: {file, encoding}.
struct Degradation {
  OperatorPtr op;
  GaussianNoise noise;
  nlohmann::json sidecar;
};

// Version of the sidecar layout written by make_degradation; readers reject others.
inline constexpr int kSidecarVersion = 1;

std::vector<std::string> task_names();
// The option keys a task accepts (CLI flag names without the leading dashes),
// e.g. {"kernel-size", "kernel-std", "boundary"} for gaussian_deblur.
std::vector<std::string> task_options(const std::string& task);
// Whether the task draws its mask, kernel or phases from the seed (so only the
// seed, not a description, can rebuild the operator of a measurement made elsewhere).
bool task_draws_from_seed(const std::string& task);
// The noise uses its own stream, derived from the seed, so that changing the
// noise level never changes the operator's random draws (mask, motion kernel).
uint64_t noise_seed(uint64_t seed);
// Rebuilds any operator from its to_json() (the "type" field picks the class).
OperatorPtr operator_from_json(const nlohmann::json& j);
// image_shape is (N, C, H, W) of the clean image the operator applies to.
Degradation make_degradation(const TaskSpec& spec, const std::vector<int64_t>& image_shape);
Degradation degradation_from_sidecar(const nlohmann::json& sidecar);
// The degradation of spec that yields a measurement of measurement_shape, for
// measurements made outside ud2m (a real photograph and its description):
// the image is as large as the measurement, --factor times larger for SR, and
// larger by the kernel's side less one for a 'valid' blur.
Degradation degradation_for_measurement(const TaskSpec& spec, const std::vector<int64_t>& measurement_shape);

}  // namespace ud2m::physics
