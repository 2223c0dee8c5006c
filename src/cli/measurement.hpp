// Reading a measurement and the degradation that produced it, as `ud2m
// degrade` wrote them: an image (PNG/JPEG, [0, 1]) with a JSON sidecar, or a
// .safetensors file holding the exact float measurement and the sidecar.
#pragma once
#include <torch/types.h>

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
Measurement load_measurement(const std::string& path, const std::string& sidecar_path = "");

}  // namespace ud2m::cli
