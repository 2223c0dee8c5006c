#include "io/safetensors.hpp"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>

#include "core/atomic_file.hpp"
#include "core/error.hpp"

namespace ud2m {
namespace {

const std::pair<const char*, torch::ScalarType> kDtypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16},
    {"BF16", torch::kBFloat16}, {"I64", torch::kInt64}, {"I32", torch::kInt32},
    {"I16", torch::kInt16},    {"I8", torch::kInt8},     {"U8", torch::kUInt8},
    {"BOOL", torch::kBool},
};

uint64_t read_u64_le(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

}  // namespace

std::string safetensors_dtype_name(torch::ScalarType dtype) {
  for (auto& [name, type] : kDtypes)
    if (type == dtype) return name;
  fail("safetensors cannot store tensors of dtype {}", c10::toString(dtype));
}

torch::ScalarType safetensors_dtype(const std::string& name) {
  for (auto& [n, type] : kDtypes)
    if (name == n) return type;
  fail("unsupported safetensors dtype '{}'", name);
}

namespace {

struct Entry {
  torch::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;  // within the data section
};

struct Header {
  Metadata metadata;
  std::map<std::string, Entry> entries;
};

// The 8-byte length prefix: the header's size, checked against the file's.
uint64_t header_length(std::string_view prefix, uint64_t file_size, const std::string& file) {
  UD2M_CHECK(file_size >= 8 && prefix.size() >= 8, "'{}' is not a safetensors file: it is only {} bytes long", file,
             file_size);
  uint64_t header_size = read_u64_le(prefix.data());
  UD2M_CHECK(header_size <= file_size - 8 && header_size < (100u << 20),
             "'{}' is not a valid safetensors file: header length {} does not fit the {}-byte file", file,
             header_size, file_size);
  return header_size;
}

Header parse_header(std::string_view json, uint64_t data_size, const std::string& file) {
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(json.begin(), json.end());
  } catch (const nlohmann::json::exception& e) {
    fail("'{}' is not a valid safetensors file: its header is not JSON ({})", file, e.what());
  }
  UD2M_CHECK(header.is_object(), "'{}' is not a valid safetensors file: header is not a JSON object", file);
  Header out;
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      for (auto& [key, value] : entry.items()) {
        UD2M_CHECK(value.is_string(), "'{}': metadata value '{}' is not a string", file, key);
        out.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    try {
      auto dtype = safetensors_dtype(entry.at("dtype").get<std::string>());
      auto shape = entry.at("shape").get<std::vector<int64_t>>();
      auto offsets = entry.at("data_offsets").get<std::vector<uint64_t>>();
      UD2M_CHECK(offsets.size() == 2 && offsets[0] <= offsets[1] && offsets[1] <= data_size,
                 "'{}': tensor '{}' lies outside the file (truncated file?)", file, name);
      uint64_t numel = 1;
      for (auto d : shape) {
        UD2M_CHECK(d >= 0, "'{}': tensor '{}' has a negative dimension", file, name);
        numel *= static_cast<uint64_t>(d);
      }
      UD2M_CHECK(numel * c10::elementSize(dtype) == offsets[1] - offsets[0],
                 "'{}': tensor '{}' has {} bytes of data but its shape needs {}", file, name,
                 offsets[1] - offsets[0], numel * c10::elementSize(dtype));
      out.entries.emplace(name, Entry{dtype, shape, offsets[0], offsets[1]});
    } catch (const nlohmann::json::exception& e) {
      fail("'{}': malformed header entry for tensor '{}' ({})", file, name, e.what());
    }
  }
  return out;
}

}  // namespace

TensorFile parse_safetensors(std::string_view bytes, const std::string& file) {
  const uint64_t header_size = header_length(bytes, bytes.size(), file);
  const uint64_t data_size = bytes.size() - 8 - header_size;
  auto header = parse_header(bytes.substr(8, header_size), data_size, file);
  const char* data = bytes.data() + 8 + header_size;
  TensorFile out{{}, std::move(header.metadata)};
  for (auto& [name, e] : header.entries) {
    auto tensor = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    if (e.end > e.begin) std::memcpy(tensor.data_ptr(), data + e.begin, e.end - e.begin);
    out.tensors.emplace(name, tensor);
  }
  return out;
}

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail("cannot open '{}': {}", path, std::strerror(errno));
  UD2M_CHECK(!std::filesystem::is_directory(path), "cannot read '{}': it is a folder", path);
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  std::string prefix(8, '\0');
  in.seekg(0);
  in.read(prefix.data(), std::min<uint64_t>(8, file_size));
  const uint64_t header_size = header_length(prefix, file_size, path);
  std::string json(header_size, '\0');
  in.read(json.data(), static_cast<std::streamsize>(header_size));
  UD2M_CHECK(in, "'{}': could not read its header", path);
  auto header = parse_header(json, file_size - 8 - header_size, path);
  metadata_ = std::move(header.metadata);
  for (auto& [name, e] : header.entries) {
    layout_.emplace(name, torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype).device(torch::kMeta)));
    ranges_.emplace(name, std::make_pair(8 + header_size + e.begin, 8 + header_size + e.end));
  }
}

torch::Tensor SafetensorsReader::read(const std::string& name) const {
  auto layout = layout_.find(name);
  UD2M_CHECK(layout != layout_.end(), "'{}' has no tensor '{}'", path_, name);
  auto [begin, end] = ranges_.at(name);
  auto tensor = torch::empty(layout->second.sizes(), torch::TensorOptions().dtype(layout->second.scalar_type()));
  std::ifstream in(path_, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(begin));
  in.read(static_cast<char*>(tensor.data_ptr()), static_cast<std::streamsize>(end - begin));
  UD2M_CHECK(in || end == begin, "'{}': could not read tensor '{}' (file changed or truncated?)", path_, name);
  return tensor;
}

TensorFile read_safetensors(const std::string& path) {
  // Tensor by tensor, so that reading never holds the file twice.
  SafetensorsReader reader(path);
  TensorFile out{{}, reader.metadata()};
  for (auto& [name, layout] : reader.layout()) out.tensors.emplace(name, reader.read(name));
  return out;
}

std::string serialize_safetensors(const TensorMap& tensors, const Metadata& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> contiguous;
  uint64_t offset = 0;
  for (auto& [name, tensor] : tensors) {
    auto t = tensor.detach().to(torch::kCPU).contiguous();
    uint64_t size = t.numel() * t.element_size();
    header[name] = {{"dtype", safetensors_dtype_name(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + size}}};
    offset += size;
    contiguous.push_back(t);
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((json.size() >> (8 * i)) & 0xff);
  bytes += json;
  bytes.reserve(bytes.size() + offset);
  for (auto& t : contiguous) bytes.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  return bytes;
}

void write_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
  write_file_atomic(path, serialize_safetensors(tensors, metadata));
}

}  // namespace ud2m
