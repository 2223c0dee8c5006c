// safetensors: the native model format (weights + string metadata).
// Layout: u64 little-endian header length, JSON header, raw little-endian data.
#pragma once
#include <torch/types.h>

#include <map>
#include <string>

namespace ud2m {

using TensorMap = std::map<std::string, torch::Tensor>;
using Metadata = std::map<std::string, std::string>;

struct TensorFile {
  TensorMap tensors;
  Metadata metadata;
};

TensorFile read_safetensors(const std::string& path);
TensorFile parse_safetensors(const std::string& bytes, const std::string& name_for_errors);
// Written atomically; tensors are stored in their own dtype, contiguous, on CPU.
void write_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata = {});
std::string serialize_safetensors(const TensorMap& tensors, const Metadata& metadata = {});

// "F32", "BF16", ... <-> torch dtype; throws Error for dtypes safetensors lacks.
std::string safetensors_dtype_name(torch::ScalarType dtype);
torch::ScalarType safetensors_dtype(const std::string& name);

}  // namespace ud2m
