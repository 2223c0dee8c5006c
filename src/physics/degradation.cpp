// Task name + options -> operator, and the sidecar that rebuilds it.
#include "physics/degradation.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "core/error.hpp"
#include "physics/blur.hpp"
#include "physics/downsampling.hpp"
#include "physics/identity.hpp"
#include "physics/inpainting.hpp"
#include "physics/jpeg.hpp"
#include "physics/kernels.hpp"
#include "physics/matrix.hpp"
#include "physics/phase_retrieval.hpp"
#include "physics/serialize.hpp"

namespace ud2m::physics {

namespace {

struct Context {
  const TaskSpec& spec;
  int64_t height, width, channels = 0;

  bool has(const std::string& key) const { return spec.options.count(key) > 0; }
  std::string text(const std::string& key, const std::string& fallback) const {
    return has(key) ? spec.options.at(key) : fallback;
  }
  int64_t integer(const std::string& key, int64_t fallback) const {
    if (!has(key)) return fallback;
    const auto& s = spec.options.at(key);
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    UD2M_CHECK(used == s.size() && !s.empty(), "--{} must be an integer, not '{}'", key, s);
    return v;
  }
  double real(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    const auto& s = spec.options.at(key);
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    UD2M_CHECK(used == s.size() && !s.empty() && std::isfinite(v), "--{} must be a number, not '{}'", key, s);
    return v;
  }
  std::string required(const std::string& key) const {
    UD2M_CHECK(has(key) && !spec.options.at(key).empty(), "task '{}' needs --{}", spec.task, key);
    return spec.options.at(key);
  }
};

OperatorPtr blur_with(const Context& c, const torch::Tensor& kernel) {
  const auto boundary = c.text("boundary", "circular");
  if (boundary == "circular") return std::make_shared<CircularBlur>(kernel, c.height, c.width);
  return std::make_shared<ConvBlur>(kernel, parse_boundary(boundary), c.height, c.width);
}

int64_t kernel_size(const Context& c, int64_t fallback) {
  const auto size = c.integer("kernel-size", fallback);
  UD2M_CHECK(size >= 1, "--kernel-size must be at least 1, not {}", size);
  UD2M_CHECK(size <= c.height && size <= c.width, "the {}x{} blur kernel is larger than the {}x{} image", size, size,
             c.height, c.width);
  return size;
}

int64_t sr_factor(const Context& c) {
  const auto f = c.integer("factor", 4);
  UD2M_CHECK(f >= 1, "--factor must be at least 1, not {}", f);
  return f;
}

// --key "128" or "128x96" (height x width).
std::pair<int64_t, int64_t> size_option(const Context& c, const std::string& key) {
  const auto s = c.required(key);
  const auto x = s.find('x');
  auto parse = [&](const std::string& part) {
    size_t used = 0;
    int64_t v = -1;
    try {
      v = std::stoll(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    UD2M_CHECK(used == part.size() && !part.empty() && v >= 0, "--{} must be N or HxW, not '{}'", key, s);
    return v;
  };
  if (x == std::string::npos) return {parse(s), parse(s)};
  return {parse(s.substr(0, x)), parse(s.substr(x + 1))};
}

std::pair<int64_t, int64_t> box_size(const Context& c) {
  if (!c.has("box-size")) return {c.height / 2, c.width / 2};
  return size_option(c, "box-size");
}

struct Task {
  std::string name;
  std::vector<std::string> options;
  std::function<OperatorPtr(const Context&)> make;
  bool draws_from_seed = false;  // its mask, kernel or phases come from the spec's seed
};

const std::vector<Task>& tasks() {
  static const std::vector<Task> list = {
      {"denoise", {}, [](const Context&) -> OperatorPtr { return std::make_shared<Identity>(); }},
      {"gaussian_deblur",
       {"kernel-size", "kernel-std", "boundary"},
       [](const Context& c) {
         const double std = c.real("kernel-std", std::sqrt(3.0));
         UD2M_CHECK(std > 0, "--kernel-std must be positive, not {}", std);
         return blur_with(c, gaussian_kernel(kernel_size(c, 5), std));
       }},
      {"uniform_deblur",
       {"kernel-size", "boundary"},
       [](const Context& c) { return blur_with(c, box_kernel(kernel_size(c, 5))); }},
      {"motion_deblur",
       {"kernel-size", "boundary"},
       [](const Context& c) {
         const auto size = kernel_size(c, 31);
         UD2M_CHECK(size >= 3, "--kernel-size must be at least 3 for motion blur, not {}", size);
         return blur_with(c, motion_kernel(size, c.spec.seed));
       },
       true},
      {"kernel_deblur",
       {"kernel", "boundary"},
       [](const Context& c) { return blur_with(c, load_kernel_file(c.required("kernel"))); }},
      {"sr",
       {"factor", "filter"},
       [](const Context& c) -> OperatorPtr {
         const auto f = sr_factor(c);
         UD2M_CHECK(c.height % f == 0 && c.width % f == 0,
                    "the {}x{} image is not divisible by the super-resolution factor {}", c.height, c.width, f);
         return std::make_shared<Downsampling>(sr_filter(c.text("filter", "bicubic"), f), f, c.height, c.width);
       }},
      {"inpainting_random",
       {"fraction"},
       [](const Context& c) -> OperatorPtr {
         const double fraction = c.real("fraction", 0.7);
         UD2M_CHECK(fraction >= 0 && fraction <= 1, "--fraction must be in [0, 1], not {}", fraction);
         return std::make_shared<Inpainting>(random_mask(c.height, c.width, fraction, c.spec.seed));
       },
       true},
      {"inpainting_box",
       {"box-size"},
       [](const Context& c) -> OperatorPtr {
         auto [h, w] = box_size(c);
         return std::make_shared<Inpainting>(box_mask(c.height, c.width, h, w));
       }},
      {"inpainting_mask",
       {"mask"},
       [](const Context& c) -> OperatorPtr {
         return std::make_shared<Inpainting>(load_mask_file(c.required("mask"), c.height, c.width));
       }},
      {"jpeg",
       {"quality"},
       [](const Context& c) -> OperatorPtr {
         const auto q = c.integer("quality", 10);
         UD2M_CHECK(q >= 1 && q <= 100, "--quality must be in 1..100, not {}", q);
         return std::make_shared<JpegCompression>(int(q));
       }},
      {"phase_retrieval",
       {"oversampling"},
       [](const Context& c) -> OperatorPtr {
         return std::make_shared<PhaseRetrieval>(c.height, c.width, c.integer("oversampling", 2), false, c.spec.seed);
       }},
      {"matrix",
       {"matrix", "image-size"},
       [](const Context& c) -> OperatorPtr {
         if (c.has("image-size")) {  // for measurements made elsewhere; an image has its own size
           const auto [h, w] = size_option(c, "image-size");
           UD2M_CHECK(h == c.height && w == c.width, "--image-size {}x{} does not match the {}x{} image", h, w,
                      c.height, c.width);
         }
         return MatrixOperator::from_file(c.required("matrix"), {c.channels, c.height, c.width});
       }},
      {"random_phase_retrieval",
       {"oversampling"},
       [](const Context& c) -> OperatorPtr {
         return std::make_shared<PhaseRetrieval>(c.height, c.width, c.integer("oversampling", 2), true, c.spec.seed);
       },
       true},
  };
  return list;
}

const Task& find_task(const std::string& name) {
  for (const auto& t : tasks())
    if (t.name == name) return t;
  fail("unknown task '{}' (valid: {})", name, fmt::join(task_names(), ", "));
}

}  // namespace

std::vector<std::string> task_names() {
  std::vector<std::string> names;
  for (const auto& t : tasks()) names.push_back(t.name);
  return names;
}

std::vector<std::string> task_options(const std::string& task) { return find_task(task).options; }

bool task_draws_from_seed(const std::string& task) { return find_task(task).draws_from_seed; }

uint64_t noise_seed(uint64_t seed) { return seed ^ 0x9E3779B97F4A7C15ull; }

Degradation make_degradation(const TaskSpec& spec, const std::vector<int64_t>& image_shape) {
  const auto& task = find_task(spec.task);
  UD2M_CHECK(spec.sigma >= 0 && std::isfinite(spec.sigma), "noise sigma must be non-negative, not {}", spec.sigma);
  UD2M_CHECK(image_shape.size() == 4 && image_shape[2] > 0 && image_shape[3] > 0,
             "image shape must be (N, C, H, W), not {}", image_shape);
  for (const auto& [key, value] : spec.options)
    UD2M_CHECK(std::find(task.options.begin(), task.options.end(), key) != task.options.end(),
               "--{} does not apply to task '{}'{}", key, spec.task,
               task.options.empty() ? std::string(" (it takes no options)")
                                    : fmt::format(" (its options: --{})", fmt::join(task.options, ", --")));
  Context context{spec, image_shape[2], image_shape[3], image_shape[1]};
  Degradation d;
  d.op = task.make(context);
  d.noise.sigma = spec.sigma;
  nlohmann::json options = nlohmann::json::object();
  for (const auto& [key, value] : spec.options) options[key] = value;
  d.sidecar = {{"format", "ud2m-degradation"},
               {"format_version", kSidecarVersion},
               {"task", spec.task},
               {"sigma", spec.sigma},
               {"seed", spec.seed},
               {"noise_seed", noise_seed(spec.seed)},
               {"options", options},
               {"input_shape", image_shape},
               {"measurement_shape", d.op->output_shape(image_shape)},
               {"operator", d.op->to_json()}};
  return d;
}

Degradation degradation_from_sidecar(const nlohmann::json& sidecar) {
  const std::string what = "the degradation sidecar";
  UD2M_CHECK(sidecar.is_object(), "{} is not a JSON object", what);
  const auto version = json_get<int64_t>(sidecar, "format_version", what);
  UD2M_CHECK(version == kSidecarVersion, "{} has format_version {}, but this ud2m reads version {}", what, version,
             kSidecarVersion);
  Degradation d;
  d.op = operator_from_json(json_get<nlohmann::json>(sidecar, "operator", what));
  d.noise.sigma = json_get<double>(sidecar, "sigma", what);
  UD2M_CHECK(d.noise.sigma >= 0, "{} has a negative sigma {}", what, d.noise.sigma);
  d.sidecar = sidecar;
  return d;
}

Degradation degradation_for_measurement(const TaskSpec& spec, const std::vector<int64_t>& measurement_shape) {
  UD2M_CHECK(measurement_shape.size() == 4, "a measurement must be (N, C, H, W), not {}", measurement_shape);
  auto image_shape = measurement_shape;
  if (spec.task == "matrix") {  // (N, C, 1, M): the image's size must be told, its channels follow
    const Context c{spec, 0, 0};
    const auto [h, w] = size_option(c, "image-size");
    UD2M_CHECK(h > 0 && w > 0, "--image-size must be positive, not {}x{}", h, w);
    const int64_t columns = matrix_file_columns(c.required("matrix"));
    image_shape = {measurement_shape[0], columns == h * w ? measurement_shape[1] : columns / (h * w), h, w};
  } else if (spec.task == "sr") {
    const auto f = sr_factor(Context{spec, 0, 0});
    image_shape[2] *= f;
    image_shape[3] *= f;
  }
  auto d = make_degradation(spec, image_shape);
  auto produced = d.op->output_shape(image_shape);
  if (produced != measurement_shape && produced.size() == 4) {
    // What the operator trims (a 'valid' blur) does not depend on the size: add it back once.
    auto larger = image_shape;
    for (int dim : {2, 3}) larger[dim] += image_shape[dim] - produced[dim];
    if (larger[2] > 0 && larger[3] > 0) {
      d = make_degradation(spec, larger);
      produced = d.op->output_shape(larger);
    }
  }
  UD2M_CHECK(produced == measurement_shape, "task '{}' does not produce a {} measurement from any image size",
             spec.task, fmt::join(measurement_shape, "x"));
  return d;
}

}  // namespace ud2m::physics
