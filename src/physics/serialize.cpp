#include "physics/serialize.hpp"

#include <torch/torch.h>

#include <cstring>

#include "core/error.hpp"

namespace ud2m::physics {

namespace {
const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64_encode(const std::string& bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t v = uint8_t(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= uint8_t(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) v |= uint8_t(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kAlphabet[v & 63] : '=';
  }
  return out;
}

std::string base64_decode(const std::string& text) {
  std::string out;
  uint32_t acc = 0;
  int nbits = 0;
  for (char c : text) {
    if (c == '=') break;
    const char* p = std::strchr(kAlphabet, c);
    UD2M_CHECK(c != '\0' && p != nullptr, "invalid base64 character '{}' in a stored mask", c);
    acc = (acc << 6) | uint32_t(p - kAlphabet);
    nbits += 6;
    if (nbits >= 8) {
      nbits -= 8;
      out += char((acc >> nbits) & 0xFF);
    }
  }
  return out;
}

std::vector<int64_t> shape_of(const torch::Tensor& t) { return t.sizes().vec(); }

nlohmann::json tensor_to_json(const torch::Tensor& t) {
  auto flat = t.detach().to(torch::kCPU, torch::kFloat32).contiguous().flatten();
  std::vector<double> values(flat.numel());
  const float* p = flat.data_ptr<float>();
  for (int64_t i = 0; i < flat.numel(); ++i) values[i] = p[i];
  return {{"shape", shape_of(t)}, {"values", values}};
}

torch::Tensor tensor_from_json(const nlohmann::json& j, const std::string& what) {
  auto shape = json_get<std::vector<int64_t>>(j, "shape", what);
  auto values = json_get<std::vector<double>>(j, "values", what);
  int64_t n = 1;
  for (auto s : shape) n *= s;
  UD2M_CHECK(n == int64_t(values.size()), "{} has {} values but its shape needs {}", what, values.size(), n);
  return torch::tensor(values, torch::kFloat64).to(torch::kFloat32).view(shape);
}

nlohmann::json mask_to_json(const torch::Tensor& mask) {
  auto flat = (mask.detach().to(torch::kCPU) > 0.5).flatten().contiguous();
  const bool* p = flat.data_ptr<bool>();
  std::string bytes((flat.numel() + 7) / 8, '\0');
  for (int64_t i = 0; i < flat.numel(); ++i)
    if (p[i]) bytes[i / 8] = char(uint8_t(bytes[i / 8]) | (1u << (i % 8)));
  return {{"shape", shape_of(mask)}, {"bits", base64_encode(bytes)}};
}

torch::Tensor mask_from_json(const nlohmann::json& j) {
  auto shape = json_get<std::vector<int64_t>>(j, "shape", "mask");
  auto bytes = base64_decode(json_get<std::string>(j, "bits", "mask"));
  int64_t n = 1;
  for (auto s : shape) n *= s;
  UD2M_CHECK(int64_t(bytes.size()) == (n + 7) / 8, "stored mask has {} bytes but its shape needs {}", bytes.size(),
             (n + 7) / 8);
  auto out = torch::zeros({n}, torch::kFloat32);
  float* p = out.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = (uint8_t(bytes[i / 8]) >> (i % 8)) & 1u ? 1.0f : 0.0f;
  return out.view(shape);
}

template <typename T>
T json_get(const nlohmann::json& j, const std::string& key, const std::string& what) {
  UD2M_CHECK(j.is_object() && j.contains(key), "{} lacks the field '{}'", what, key);
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("{} has a field '{}' of the wrong type", what, key);
  }
}

template std::string json_get<std::string>(const nlohmann::json&, const std::string&, const std::string&);
template double json_get<double>(const nlohmann::json&, const std::string&, const std::string&);
template int64_t json_get<int64_t>(const nlohmann::json&, const std::string&, const std::string&);
template uint64_t json_get<uint64_t>(const nlohmann::json&, const std::string&, const std::string&);
template bool json_get<bool>(const nlohmann::json&, const std::string&, const std::string&);
template std::vector<int64_t> json_get<std::vector<int64_t>>(const nlohmann::json&, const std::string&,
                                                              const std::string&);
template std::vector<double> json_get<std::vector<double>>(const nlohmann::json&, const std::string&,
                                                            const std::string&);
template nlohmann::json json_get<nlohmann::json>(const nlohmann::json&, const std::string&, const std::string&);

}  // namespace ud2m::physics
