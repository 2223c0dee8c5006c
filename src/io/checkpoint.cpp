#include "io/checkpoint.hpp"

#include <cstdio>
#include <memory>
#include <set>
#include <unordered_set>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "io/mapped_file.hpp"
#include "io/pickle.hpp"
#include "io/torch_file.hpp"
#include "io/zip.hpp"

namespace ud2m {
namespace {

using K = PyValue::Kind;

std::string join(const std::string& prefix, const std::string& part) {
  return prefix.empty() ? part : prefix + "." + part;
}

bool is_scalar(const PyValue& v) {
  return v.is(K::None) || v.is(K::Bool) || v.is(K::Int) || v.is(K::BigInt) || v.is(K::Float) || v.is(K::String) ||
         v.is(K::Bytes) || v.is(K::Global);
}

// Turns the unpickled tree into dotted tensor names and string metadata.
class Flattener {
 public:
  explicit Flattener(const std::string& file) : file_(file) {}

  void walk(const PyValue& v, const std::string& name, int depth = 0) {
    // Real checkpoints nest a few levels; a pickle can also refer to itself.
    UD2M_CHECK(depth < 64, "'{}' is corrupt: its objects nest more than 64 levels deep (at '{}')", file_, name);
    // The memo lets a small pickle name one object exponentially often ("billion laughs").
    UD2M_CHECK(++visits_ < 50'000'000, "'{}' is corrupt: it refers to the same objects too many times", file_);
    switch (v.kind) {
      case K::Tensor:
        UD2M_CHECK(out.tensors.emplace(name.empty() ? "tensor" : name, v.tensor).second,
                   "'{}' holds two tensors named '{}'", file_, name);
        return;
      case K::Dict:
        walk_entries(v, name, depth);
        return;
      case K::List:
      case K::Tuple:
        if (std::all_of(v.items.begin(), v.items.end(), [](const PyPtr& i) { return is_scalar(*i); })) {
          put_metadata(name, short_repr(v));  // e.g. hyper-parameters such as channel_mult=(1, 2, 4)
          return;
        }
        for (size_t i = 0; i < v.items.size(); ++i) walk(*v.items[i], join(name, std::to_string(i)), depth + 1);
        return;
      case K::Record:  // opaque mode: an object's tensors are in its constructor args, items and __dict__
        for (size_t i = 0; i < v.items.size(); ++i) walk(*v.items[i], join(name, std::to_string(i)), depth + 1);
        walk_entries(v, name, depth);
        if (v.state) walk(*v.state, name, depth + 1);
        return;
      case K::Storage:  // a bare storage has no shape: not a weight
        return;
      default:
        put_metadata(name, py_repr(v));
    }
  }

  TensorFile out;

 private:
  void walk_entries(const PyValue& v, const std::string& name, int depth) {
    std::unordered_set<std::string> seen;  // a repeated key: its last value counts, as in Python
    for (auto it = v.entries.rbegin(); it != v.entries.rend(); ++it) {
      auto part = key_name(*it->first);
      if (seen.insert(part).second) walk(*it->second, join(name, part), depth + 1);
    }
  }

  // Metadata is for reading: a list of thousands of parameter ids is summarised.
  static std::string short_repr(const PyValue& v) {
    constexpr size_t kMax = 32;
    if (v.items.size() <= kMax) return py_repr(v);
    PyValue head = v;
    head.items.resize(kMax);
    auto s = py_repr(head);
    return fmt::format("{}, ... ({} items){}", s.substr(0, s.size() - 1), v.items.size(), s.back());
  }

  std::string key_name(const PyValue& key) { return key.is(K::String) ? key.text : py_repr(key, 2); }
  void put_metadata(const std::string& name, std::string value) {
    out.metadata[name.empty() ? "value" : name] = std::move(value);
  }
  const std::string& file_;
  int64_t visits_ = 0;
};

TensorFile flatten(const PyPtr& root, const std::string& file) {
  Flattener f(file);
  f.walk(*root, "");
  return std::move(f.out);
}

uint64_t u64_le(std::string_view b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[i]);
  return v;
}

TensorFile parse_detected(std::string_view bytes, const std::string& file, const CheckpointOptions& options,
                          std::shared_ptr<const MappedFile> owner) {
  TorchLoadOptions torch_options{options.opaque_records, std::move(owner)};
  switch (detect_checkpoint_format(bytes)) {
    case CheckpointFormat::Safetensors: return parse_safetensors(bytes, file);
    case CheckpointFormat::TorchZip: return flatten(load_torch_zip(bytes, file, torch_options), file);
    case CheckpointFormat::TorchLegacy: return flatten(load_torch_legacy(bytes, file, torch_options), file);
    case CheckpointFormat::Pickle: return flatten(load_plain_pickle(bytes, file, torch_options), file);
    case CheckpointFormat::TorchTar:
      fail("'{}' is in torch's pre-2018 tar checkpoint format, which ud2m does not read; load it with torch.load "
           "and save it again with torch.save",
           file);
    case CheckpointFormat::Unknown: break;
  }
  UD2M_CHECK(!bytes.empty(), "'{}' is empty", file);
  fail("'{}' is not a model file ud2m can read (neither safetensors nor a torch.save checkpoint)", file);
}

// Legacy torch.save files open with a pickled long, torch's magic number: after
// PROTO (2 bytes) and, from protocol 4 on, a FRAME header (9 bytes).
bool starts_with_torch_magic(std::string_view bytes) {
  static const std::string kMagicLong("\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 12);
  return bytes.substr(0, 32).find(kMagicLong) != std::string_view::npos;
}

}  // namespace

CheckpointFormat detect_checkpoint_format(std::string_view bytes) {
  // A JSON header of plausible length; whether it fits the file is parse_safetensors' to say.
  if (bytes.size() >= 9 && bytes[8] == '{' && u64_le(bytes) < (100u << 20)) return CheckpointFormat::Safetensors;
  if (looks_like_zip(bytes)) return CheckpointFormat::TorchZip;
  if (bytes.size() >= 262 && bytes.substr(257, 5) == "ustar") return CheckpointFormat::TorchTar;
  if (!bytes.empty() && static_cast<uint8_t>(bytes[0]) == 0x80)  // PROTO: a pickle; legacy torch.save opens with
    return starts_with_torch_magic(bytes) ? CheckpointFormat::TorchLegacy : CheckpointFormat::Pickle;
  return CheckpointFormat::Unknown;
}

CheckpointFormat detect_checkpoint_file_format(const std::string& path) {
  std::string head(512, '\0');
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return CheckpointFormat::Unknown;
  head.resize(std::fread(head.data(), 1, head.size(), f));
  std::fclose(f);
  return detect_checkpoint_format(head);
}

const char* checkpoint_format_name(CheckpointFormat format) {
  switch (format) {
    case CheckpointFormat::Safetensors: return "safetensors";
    case CheckpointFormat::TorchZip: return "torch.save (zip)";
    case CheckpointFormat::TorchLegacy: return "torch.save (legacy)";
    case CheckpointFormat::Pickle: return "pickle";
    case CheckpointFormat::TorchTar: return "torch.save (tar)";
    case CheckpointFormat::Unknown: break;
  }
  return "unknown";
}

namespace {

TensorFile parse_guarded(std::string_view bytes, const std::string& file, const CheckpointOptions& options,
                         std::shared_ptr<const MappedFile> owner) {
  // Anything torch itself throws on malformed input is still the file's fault.
  try {
    return parse_detected(bytes, file, options, std::move(owner));
  } catch (const c10::Error& e) {
    fail("'{}' is corrupt: {}", file, e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    fail("'{}' is corrupt or too large: reading it ran out of memory", file);
  }
}

}  // namespace

TensorFile parse_checkpoint(const std::string& bytes, const std::string& file, const CheckpointOptions& options) {
  return parse_guarded(bytes, file, options, nullptr);
}

TensorFile read_checkpoint(const std::string& path, const CheckpointOptions& options) {
  // Mapped, so the tensors of a zip checkpoint can be views of it instead of copies.
  auto file = MappedFile::open(path);
  return parse_guarded(file->bytes(), path, options, file);
}

namespace {

std::string first_component(const std::string& name) { return name.substr(0, name.find('.')); }

// The tensors under "prefix.", with the prefix removed.
TensorMap under(const TensorMap& tensors, const std::string& prefix) {
  TensorMap out;
  for (auto& [name, t] : tensors)
    if (name.compare(0, prefix.size() + 1, prefix + ".") == 0) out.emplace(name.substr(prefix.size() + 1), t);
  return out;
}

TensorMap strip_data_parallel(TensorMap tensors) {
  if (tensors.empty()) return tensors;
  for (auto& [name, t] : tensors)
    if (first_component(name) == "module" && name != "module") continue;
    else return tensors;
  return under(tensors, "module");
}

}  // namespace

TensorMap state_dict_of(const TensorFile& file) {
  // Top-level entries that are training state, not the model.
  static const std::set<std::string> kTrainingState = {
      "optimizer", "optimizer_states", "optimizer_state_dict", "opt", "lr_scheduler", "lr_schedulers",
      "scheduler", "scaler", "grad_scaler", "ema", "ema_state_dict", "loops", "callbacks"};
  static const char* kWrappers[] = {"state_dict", "model_state_dict", "model", "module", "net", "network"};
  std::set<std::string> tops;
  for (auto& [name, t] : file.tensors) tops.insert(first_component(name));
  // Weights that are the only thing saved, under an EMA name, are the model too.
  static const std::set<std::string> kSoleWrappers = {"ema", "ema_model", "model_ema", "ema_state_dict", "params_ema"};
  if (tops.size() == 1 && kSoleWrappers.count(*tops.begin()) && !file.tensors.count(*tops.begin()))
    return strip_data_parallel(under(file.tensors, *tops.begin()));
  for (const char* wrapper : kWrappers) {
    if (!tops.count(wrapper) || file.tensors.count(wrapper)) continue;
    bool rest_is_training_state = std::all_of(tops.begin(), tops.end(), [&](const std::string& top) {
      return top == wrapper || kTrainingState.count(top);
    });
    // Lightning's "state_dict" is the model whatever sits beside it.
    if (rest_is_training_state || std::string(wrapper) == "state_dict")
      return strip_data_parallel(under(file.tensors, wrapper));
  }
  return strip_data_parallel(file.tensors);
}

}  // namespace ud2m
