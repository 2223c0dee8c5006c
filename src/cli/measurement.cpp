#include "cli/measurement.hpp"

#include <filesystem>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "io/safetensors.hpp"
#include "physics/matrix.hpp"

namespace ud2m::cli {

namespace {

nlohmann::json parse_sidecar(const std::string& text, const std::string& name) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("the sidecar '{}' is not valid JSON ({})", name, e.what());
  }
}

std::vector<int64_t> shape_field(const nlohmann::json& sidecar, const char* key, const std::string& name) {
  UD2M_CHECK(sidecar.contains(key), "the sidecar '{}' has no '{}' field", name, key);
  return sidecar.at(key).get<std::vector<int64_t>>();
}

TensorFile read_measurement_file(const std::string& path) {
  auto file = read_safetensors(path);
  UD2M_CHECK(file.tensors.count("y"), "'{}' holds no measurement tensor 'y'", path);
  return file;
}

Measurement load_described_measurement(const std::string& path, const physics::TaskSpec& task) {
  Measurement m;
  if (has_extension(path, ".safetensors")) {
    m.y = read_measurement_file(path).tensors.at("y").to(torch::kFloat32);
  } else {
    m.y = to_model(read_image(path, 0));
  }
  m.degradation = physics::degradation_for_measurement(task, m.y.sizes().vec());
  m.image_shape = m.degradation.sidecar.at("input_shape").get<std::vector<int64_t>>();
  m.y = physics::measurement_to_model(*m.degradation.op, m.y);
  return m;
}

}  // namespace

Measurement load_measurement(const std::string& path, const std::string& sidecar_path,
                             const std::optional<physics::TaskSpec>& task) {
  if (task) return load_described_measurement(path, *task);
  Measurement m;
  nlohmann::json sidecar;
  std::string sidecar_name = sidecar_path;
  if (has_extension(path, ".safetensors")) {
    auto file = read_measurement_file(path);
    m.y = file.tensors.at("y").to(torch::kFloat32);
    if (sidecar_name.empty()) {
      UD2M_CHECK(file.metadata.count("ud2m_sidecar"), "'{}' carries no sidecar; pass --sidecar", path);
      sidecar = parse_sidecar(file.metadata.at("ud2m_sidecar"), path);
    }
  }
  if (sidecar.is_null()) {
    if (sidecar_name.empty()) sidecar_name = replace_extension(path, ".json");
    UD2M_CHECK(std::filesystem::exists(sidecar_name),
               "no sidecar '{}' describes the measurement '{}'; pass --sidecar FILE", sidecar_name, path);
    sidecar = parse_sidecar(read_file(sidecar_name), sidecar_name);
  }
  try {
    physics::find_moved_matrix(sidecar, std::filesystem::path(path).parent_path().string());
    m.degradation = physics::degradation_from_sidecar(sidecar);
    m.image_shape = shape_field(sidecar, "input_shape", sidecar_name);
    auto y_shape = shape_field(sidecar, "measurement_shape", sidecar_name);
    if (!m.y.defined()) m.y = to_model(read_image(path, static_cast<int>(y_shape.at(1))));
    UD2M_CHECK(m.y.sizes().vec() == y_shape,
               "the measurement '{}' is {} but its sidecar '{}' describes a {} measurement", path,
               fmt::join(m.y.sizes(), "x"), sidecar_name.empty() ? path : sidecar_name, fmt::join(y_shape, "x"));
  } catch (const nlohmann::json::exception& e) {
    fail("the sidecar '{}' is malformed ({})", sidecar_name.empty() ? path : sidecar_name, e.what());
  }
  m.y = physics::measurement_to_model(*m.degradation.op, m.y);
  return m;
}

void add_task_flags(CLI::App& cmd, std::map<std::string, std::string>& options) {
  struct Flag {
    const char* name;
    const char* type;
    const char* help;
  };
  static const Flag flags[] = {
      {"kernel-size", "INT", "blur kernel side in pixels (gaussian/uniform 5, motion 31)"},
      {"kernel-std", "FLOAT", "Gaussian kernel std in pixels (default sqrt(3))"},
      {"kernel", "FILE", "kernel file for kernel_deblur (gray PNG/JPEG or .safetensors)"},
      {"boundary", "NAME", "blur boundary: circular (default), reflect or valid"},
      {"factor", "INT", "super-resolution factor (default 4)"},
      {"filter", "NAME", "super-resolution filter: bicubic (default), gaussian or box"},
      {"fraction", "FLOAT", "fraction of missing pixels for inpainting_random (default 0.7)"},
      {"box-size", "N|HxW", "missing box for inpainting_box: N or HxW (default half of each side)"},
      {"mask", "FILE", "mask PNG for inpainting_mask (white = observed)"},
      {"quality", "INT", "JPEG quality factor 1..100 (default 10)"},
      {"oversampling", "INT", "phase retrieval zero-padding factor (default 2)"},
      {"matrix", "FILE", "matrix task: the operator's matrix (.safetensors, see `ud2m degrade --help`)"},
      {"image-size", "N|HxW", "matrix task: the image's size, for a measurement made elsewhere"},
  };
  for (const auto& flag : flags) {
    std::string name = flag.name;
    cmd.add_option_function<std::string>(
           "--" + name, [&options, name](const std::string& value) { options[name] = value; }, flag.help)
        ->type_name(flag.type);
  }
}

}  // namespace ud2m::cli
