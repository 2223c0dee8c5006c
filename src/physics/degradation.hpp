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

struct Degradation {
  OperatorPtr op;
  GaussianNoise noise;
  nlohmann::json sidecar;  // task, sigma, seed, shapes, operator->to_json()
};

std::vector<std::string> task_names();
// image_shape is (N, C, H, W) of the clean image the operator applies to.
Degradation make_degradation(const TaskSpec& spec, const std::vector<int64_t>& image_shape);
Degradation degradation_from_sidecar(const nlohmann::json& sidecar);

}  // namespace ud2m::physics
