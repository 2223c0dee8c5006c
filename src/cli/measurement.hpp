// Reading a measurement and the degradation that produced it, as `ud2m
// degrade` wrote them: an image (PNG/JPEG, [0, 1]) with a JSON sidecar, or a
// .safetensors file holding the exact float measurement and the sidecar; or
// a measurement made elsewhere (a real photograph) described on the command
// line by the same task name and flags as `degrade` takes.
#pragma once
#include <CLI/CLI.hpp>
#include <torch/types.h>

#include <map>
#include <optional>
#include <string>

#include "core/paths.hpp"
#include "physics/degradation.hpp"

namespace ud2m::cli {

struct Measurement {
  torch::Tensor y;  // model units, shaped like the operator's output
  physics::Degradation degradation;
  std::vector<int64_t> image_shape;  // (N, C, H, W) of the unknown image
};

// sidecar_path "" means: beside the measurement, with a .json extension.
// With `task`, no sidecar is read: the task describes the degradation, and
// the image's size follows from the measurement's.
Measurement load_measurement(const std::string& path, const std::string& sidecar_path = "",
                             const std::optional<physics::TaskSpec>& task = std::nullopt);

// The task options (--kernel-size, --factor, --mask, ...) as flags of cmd,
// collected by flag name into `options`.
void add_task_flags(CLI::App& cmd, std::map<std::string, std::string>& options);

}  // namespace ud2m::cli
