// `ud2m info FILE`: what a model file holds, for any format ud2m reads.
#include <nlohmann/json.hpp>

#include <cstdio>

#include "cli/commands.hpp"
#include "core/error.hpp"
#include "io/checkpoint.hpp"
#include "nets/ddpm_pesser.hpp"
#include "nets/edm2_unet.hpp"

namespace ud2m::cli {
namespace {

struct InfoOptions {
  std::string file;
  bool json = false;
  bool weights_only = false;
  bool keep_objects = false;
};

std::string dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return "float32";
    case torch::kFloat64: return "float64";
    case torch::kFloat16: return "float16";
    case torch::kBFloat16: return "bfloat16";
    case torch::kInt64: return "int64";
    case torch::kInt32: return "int32";
    case torch::kInt16: return "int16";
    case torch::kInt8: return "int8";
    case torch::kUInt8: return "uint8";
    case torch::kBool: return "bool";
    default: return c10::toString(t);
  }
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) bytes /= 1024, ++u;
  return u == 0 ? fmt::format("{:.0f} {}", bytes, units[u]) : fmt::format("{:.1f} {}", bytes, units[u]);
}

void print_text(const InfoOptions& o, const char* format, const TensorMap& tensors, const Metadata& metadata,
                int64_t params, int64_t bytes) {
  std::printf("%s: %s, %zu tensors\n", o.file.c_str(), format, tensors.size());
  size_t width = 4;
  for (auto& [name, t] : tensors) width = std::max(width, name.size());
  for (auto& [name, t] : tensors)
    std::printf("  %-*s  %-8s  [%s]\n", static_cast<int>(width), name.c_str(), dtype_name(t.scalar_type()).c_str(),
                fmt::format("{}", fmt::join(t.sizes(), ", ")).c_str());
  std::printf("parameters: %lld (%s)\n", static_cast<long long>(params), human_bytes(static_cast<double>(bytes)).c_str());
  if (metadata.empty()) return;
  std::printf("metadata:\n");
  for (auto& [key, value] : metadata) std::printf("  %s: %s\n", key.c_str(), value.c_str());
}

void print_json(const InfoOptions& o, const char* format, const TensorMap& tensors, const Metadata& metadata,
                int64_t params, int64_t bytes) {
  nlohmann::json list = nlohmann::json::array();
  for (auto& [name, t] : tensors)
    list.push_back({{"name", name}, {"dtype", dtype_name(t.scalar_type())}, {"shape", t.sizes().vec()}});
  nlohmann::json out = {{"file", o.file},    {"format", format},  {"tensors", list},
                        {"parameters", params}, {"bytes", bytes}, {"metadata", metadata}};
  std::printf("%s\n", out.dump(2).c_str());
}

// Names the network when the weights are a layout that loads by path alone.
void print_layout(const std::string& file, const TensorMap& weights, const TensorFile& whole) {
  auto edm2 = nets::edm2_state_dict(whole);
  if (nets::looks_like_edm2(edm2)) {
    auto config = nets::infer_edm2_config(edm2, whole.metadata, file);
    std::printf("layout: EDM2 network (%s), loads with --model\n", config.to_json().dump().c_str());
    return;
  }
  if (!nets::has_pesser_ddpm_names(weights)) return;
  try {
    auto config = nets::infer_pesser_ddpm_config(weights, file);
    std::printf("layout: DDPM U-Net, pytorch_diffusion names: %s\n", nets::describe_ddpm_config(config).c_str());
  } catch (const Error& e) {
    std::printf("layout: pytorch_diffusion (DDPM) names, but %s\n", e.what());
  }
}

void run_info(const InfoOptions& o) {
  CheckpointOptions options;
  options.opaque_records = o.keep_objects;
  TensorFile file = read_checkpoint(o.file, options);
  const char* format = checkpoint_format_name(detect_checkpoint_file_format(o.file));
  TensorMap tensors = o.weights_only ? state_dict_of(file) : file.tensors;
  int64_t params = 0, nbytes = 0;
  for (auto& [name, t] : tensors) {
    params += t.numel();
    nbytes += t.numel() * static_cast<int64_t>(t.element_size());
  }
  if (o.json)
    print_json(o, format, tensors, file.metadata, params, nbytes);
  else {
    print_text(o, format, tensors, file.metadata, params, nbytes);
    print_layout(o.file, o.weights_only ? tensors : state_dict_of(file), file);
  }
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto options = std::make_shared<InfoOptions>();
  auto* cmd = app.add_subcommand(
      "info",
      "List what a model file holds: each tensor's name, dtype and shape, the total parameter count and size, and "
      "its metadata. Reads safetensors and PyTorch checkpoints (.pt/.pth/.ckpt/.bin, zip or legacy torch.save "
      "format) without running any code from them; nested checkpoints show dotted names (state_dict.conv.weight) "
      "and their non-tensor entries (epoch, hyper-parameters) as metadata.");
  cmd->add_option("file", options->file, "Model file: .safetensors, .pt, .pth, .ckpt or diffusers .bin")->required();
  cmd->add_flag("--json", options->json,
                "Print one JSON object {file, format, tensors: [{name, dtype, shape}], parameters, bytes, metadata} "
                "instead of text");
  cmd->add_flag("--weights", options->weights_only,
                "Show only the model weights, without a wrapper such as 'state_dict.' or 'model.' and without "
                "optimizer state");
  cmd->add_flag("--keep-objects", options->keep_objects,
                "Also read files that pickle whole Python objects (an nn.Module, argparse.Namespace, ...) instead of "
                "refusing them: each object is kept as inert data and its tensors are listed under its attribute "
                "names. No code from the file runs either way, and names such as os.system stay refused");
  cmd->callback([options] { run_info(*options); });
}

}  // namespace ud2m::cli
