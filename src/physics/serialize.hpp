// Helpers that store operator parameters in JSON exactly: kernels as lists of
// numbers (float32 -> double -> text round-trips bit for bit), binary masks as
// packed bits in base64 (a 256x256 mask is ~11 kB of text instead of 300 kB).
#pragma once
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ud2m::physics {

std::string base64_encode(const std::string& bytes);
std::string base64_decode(const std::string& text);  // throws Error on bad characters

// {"shape": [...], "values": [...]} of a float tensor (stored as float32).
nlohmann::json tensor_to_json(const torch::Tensor& t);
torch::Tensor tensor_from_json(const nlohmann::json& j, const std::string& what);

// {"shape": [H, W], "bits": base64} of a 0/1 tensor; bit i of byte k is pixel 8k+i.
nlohmann::json mask_to_json(const torch::Tensor& mask);
torch::Tensor mask_from_json(const nlohmann::json& j);

// Reads a required field, naming it when it is missing or has the wrong type.
template <typename T>
T json_get(const nlohmann::json& j, const std::string& key, const std::string& what);

std::vector<int64_t> shape_of(const torch::Tensor& t);

}  // namespace ud2m::physics
