// safetensors: the native model format (weights + string metadata).
// Layout: u64 little-endian header length, JSON header, raw little-endian data.
#pragma once
#include <torch/types.h>

#include <map>
#include <string>
#include <string_view>

namespace ud2m {

using TensorMap = std::map<std::string, torch::Tensor>;
using Metadata = std::map<std::string, std::string>;

struct TensorFile {
  TensorMap tensors;
  Metadata metadata;
};

TensorFile read_safetensors(const std::string& path);
TensorFile parse_safetensors(std::string_view bytes, const std::string& name_for_errors);

// A safetensors file opened by its header alone (checked as parse_safetensors
// does): tensors are read one at a time, so a model can be built first and
// filled without holding a second copy of its weights.
class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path);
  const Metadata& metadata() const { return metadata_; }
  // Name -> shape, dtype and no data (meta device): for shape checks.
  const TensorMap& layout() const { return layout_; }
  torch::Tensor read(const std::string& name) const;

 private:
  std::string path_;
  Metadata metadata_;
  TensorMap layout_;
  std::map<std::string, std::pair<uint64_t, uint64_t>> ranges_;  // file offsets [begin, end)
};
// Written atomically; tensors are stored in their own dtype, contiguous, on CPU.
void write_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata = {});
std::string serialize_safetensors(const TensorMap& tensors, const Metadata& metadata = {});

// "F32", "BF16", ... <-> torch dtype; throws Error for dtypes safetensors lacks.
std::string safetensors_dtype_name(torch::ScalarType dtype);
torch::ScalarType safetensors_dtype(const std::string& name);

}  // namespace ud2m
