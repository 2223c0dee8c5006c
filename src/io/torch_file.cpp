#include "io/torch_file.hpp"

#include <cstring>
#include <map>

#include "core/error.hpp"
#include "io/torch_globals.hpp"
#include "io/zip.hpp"

namespace ud2m {
namespace {

using K = PyValue::Kind;

// The fields of a ('storage', storage_type, key, location, numel[, view]) id.
struct StorageId {
  torch::ScalarType dtype;
  std::string key;
  int64_t numel;
  PyPtr view;  // legacy only: (view_key, offset, size) or None
};

// Legacy saves of whole modules also emit ('module', cls, source_file, source)
// ids, to check the class's source on load: the class itself is the value.
// (Its global was already refused unless opaque records are on.)
PyPtr module_id(const PyPtr& id) {
  if (id->is(K::Tuple) && id->items.size() == 4 && id->items[0]->is(K::String) && id->items[0]->text == "module")
    return id->items[1];
  return nullptr;
}

StorageId parse_storage_id(const PyPtr& id, const std::string& file) {
  UD2M_CHECK(id->is(K::Tuple) && id->items.size() >= 5 && id->items[0]->is(K::String) &&
                 id->items[0]->text == "storage",
             "'{}' is corrupt: its pickle refers to an unknown external object {}", file, py_repr(*id, 2));
  auto& type = id->items[1];
  auto& key = id->items[2];
  auto& numel = id->items[4];
  UD2M_CHECK(type->is(K::Global) && type->global && !type->global->call,
             "'{}' is corrupt: a storage has type {}, not a torch storage class", file, py_repr(*type, 1));
  UD2M_CHECK(key->is(K::String) || key->is(K::Int), "'{}' is corrupt: a storage key is {}", file, py_repr(*key, 1));
  UD2M_CHECK(numel->is(K::Int) && numel->integer >= 0, "'{}' is corrupt: a storage size is {}", file,
             py_repr(*numel, 1));
  return {type->dtype, key->is(K::String) ? key->text : std::to_string(key->integer), numel->integer,
          id->items.size() > 5 ? id->items[5] : nullptr};
}

// Storage sizes come from the file; refuse any larger than the file itself
// before allocating, so a corrupt size is an Error, not an out-of-memory abort.
int64_t checked_nbytes(const StorageId& s, uint64_t file_size, const std::string& file) {
  const auto elem = static_cast<int64_t>(c10::elementSize(s.dtype));
  UD2M_CHECK(static_cast<uint64_t>(s.numel) <= file_size / elem,
             "'{}' is truncated or corrupt: storage '{}' claims {} elements, more than the file holds", file, s.key,
             s.numel);
  return s.numel * elem;
}

torch::Tensor bytes_tensor(std::string_view data) {
  auto t = torch::empty({static_cast<int64_t>(data.size())}, torch::kUInt8);
  if (!data.empty()) std::memcpy(t.data_ptr(), data.data(), data.size());
  return t;
}

// `data` as a tensor: in place when it lies in the mapped file `owner` and
// is aligned for any element type (torch aligns storages in its zip to 64
// bytes), else a copy.
torch::Tensor storage_bytes(std::string_view data, const std::shared_ptr<const MappedFile>& owner) {
  const bool inside = owner && owner->contains(data);
  if (!inside || reinterpret_cast<uintptr_t>(data.data()) % 16 != 0) return bytes_tensor(data);
  return torch::from_blob(const_cast<char*>(data.data()), {static_cast<int64_t>(data.size())},
                          [keep = owner](void*) {}, torch::kUInt8);
}

// The archive's folder: torch names it after the file, so find "<x>/data.pkl".
std::string archive_prefix(const ZipArchive& zip, const std::string& file) {
  for (auto& name : zip.names()) {
    auto slash = name.find('/');
    if (slash != std::string::npos && name.substr(slash) == "/data.pkl") return name.substr(0, slash + 1);
  }
  for (auto& name : zip.names())
    UD2M_CHECK(name.size() < 13 || name.substr(name.size() - 13) != "constants.pkl",
               "'{}' is a TorchScript archive (torch.jit.save), not a checkpoint; save the model's state_dict() "
               "with torch.save instead",
               file);
  fail("'{}' is a zip archive but not a torch.save checkpoint: it has no data.pkl", file);
}

}  // namespace

PyPtr load_torch_zip(std::string_view bytes, const std::string& file, const TorchLoadOptions& options) {
  ZipArchive zip(bytes, file);
  const std::string prefix = archive_prefix(zip, file);
  UD2M_CHECK(!zip.contains(prefix + "constants.pkl"),
             "'{}' is a TorchScript archive (torch.jit.save), not a checkpoint; save the model's state_dict() with "
             "torch.save instead",
             file);
  bool big_endian = false;
  std::string scratch;
  if (zip.contains(prefix + "byteorder")) {
    auto order = zip.read(prefix + "byteorder", scratch);
    UD2M_CHECK(order == "little" || order == "big", "'{}' is corrupt: unknown byte order '{}'", file, order);
    big_endian = order == "big";
  }

  std::map<std::string, torch::Tensor> loaded;  // key -> bytes: tensors that share a storage share these
  UnpickleOptions opts;
  opts.globals = &torch_globals();
  opts.opaque_records = options.opaque_records;
  opts.persistent_load = [&](const PyPtr& id) {
    auto s = parse_storage_id(id, file);
    auto it = loaded.find(s.key);
    if (it == loaded.end()) {
      std::string scratch;
      auto data = zip.read(prefix + "data/" + s.key, scratch);
      UD2M_CHECK(data.size() >= static_cast<uint64_t>(checked_nbytes(s, bytes.size(), file)),
                 "'{}' is corrupt: storage '{}' has {} bytes but needs {}", file, s.key, data.size(),
                 s.numel * c10::elementSize(s.dtype));
      auto t = big_endian ? bytes_tensor(data) : storage_bytes(data, options.owner);
      if (big_endian) byteswap_storage(t, s.dtype);
      it = loaded.emplace(s.key, t).first;
    }
    return make_storage(it->second, s.dtype);
  };
  return unpickle(zip.read(prefix + "data.pkl", scratch), file, opts).value;
}

PyPtr load_torch_legacy(std::string_view bytes, const std::string& file, const TorchLoadOptions& options) {
  UnpickleOptions plain;  // the header pickles hold plain data only
  auto magic = unpickle(bytes, file, plain);
  // 0x1950a86a20f9469cfc6c, as the little-endian bytes of a pickled long
  static const std::string kMagic("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);
  UD2M_CHECK(magic.value->is(K::BigInt) && magic.value->text == kMagic,
             "'{}' is not a torch checkpoint: it is a pickle without torch's magic number", file);
  auto version = unpickle(bytes, file, plain, magic.end);
  UD2M_CHECK(version.value->is(K::Int) && version.value->integer == 1001,
             "'{}' is a torch checkpoint of unknown legacy version {}", file, py_repr(*version.value, 1));
  auto sys_info = unpickle(bytes, file, plain, version.end);
  if (auto little = sys_info.value->get("little_endian"))
    UD2M_CHECK(little->is(K::Bool) && little->boolean,
               "'{}' was saved on a big-endian machine in the legacy format, which ud2m does not read", file);

  struct Slot {
    torch::Tensor bytes;
    torch::ScalarType dtype;
  };
  std::map<std::string, Slot> storages;  // root key -> bytes, filled after the pickle
  UnpickleOptions opts;
  opts.globals = &torch_globals();
  opts.opaque_records = options.opaque_records;
  opts.persistent_load = [&](const PyPtr& id) {
    if (auto cls = module_id(id)) return cls;
    auto s = parse_storage_id(id, file);
    auto it = storages.find(s.key);
    if (it == storages.end())
      it = storages.emplace(s.key, Slot{torch::zeros({checked_nbytes(s, bytes.size(), file)}, torch::kUInt8), s.dtype})
               .first;
    torch::Tensor data = it->second.bytes;
    if (s.view && !s.view->is(K::None)) {  // a storage view: (view_key, offset, size), in elements
      auto& v = s.view->items;
      const int64_t elem = c10::elementSize(s.dtype);
      UD2M_CHECK(s.view->is(K::Tuple) && v.size() == 3 && v[1]->is(K::Int) && v[2]->is(K::Int) &&
                     v[1]->integer >= 0 && v[2]->integer >= 0 &&
                     v[1]->integer + v[2]->integer <= data.numel() / elem,
                 "'{}' is corrupt: a storage view {} lies outside its storage", file, py_repr(*s.view, 2));
      data = data.narrow(0, v[1]->integer * elem, v[2]->integer * elem);
    }
    return make_storage(data, s.dtype);
  };
  auto object = unpickle(bytes, file, opts, sys_info.end);
  auto keys = unpickle(bytes, file, plain, object.end);
  UD2M_CHECK(keys.value->is(K::List), "'{}' is corrupt: its storage list is {}", file, py_repr(*keys.value, 1));

  // Raw storages follow in the listed order, each as <u64 element count><bytes>.
  size_t at = keys.end;
  for (auto& key_value : keys.value->items) {
    UD2M_CHECK(key_value->is(K::String), "'{}' is corrupt: a storage key is {}", file, py_repr(*key_value, 1));
    auto it = storages.find(key_value->text);
    UD2M_CHECK(it != storages.end(), "'{}' is corrupt: it stores data for unknown storage '{}'", file, key_value->text);
    auto& slot = it->second;
    UD2M_CHECK(bytes.size() - at >= 8, "'{}' is truncated: storage '{}' is missing", file, key_value->text);
    uint64_t count = 0;
    for (int i = 7; i >= 0; --i) count = (count << 8) | static_cast<uint8_t>(bytes[at + i]);
    at += 8;
    const uint64_t nbytes = slot.bytes.numel();
    UD2M_CHECK(count <= nbytes && count * c10::elementSize(slot.dtype) == nbytes,
               "'{}' is corrupt: storage '{}' has {} elements but its tensors expect {}", file, key_value->text, count,
               nbytes / c10::elementSize(slot.dtype));
    UD2M_CHECK(bytes.size() - at >= nbytes, "'{}' is truncated: storage '{}' needs {} bytes, {} remain", file,
               key_value->text, nbytes, bytes.size() - at);
    if (nbytes) std::memcpy(slot.bytes.data_ptr(), bytes.data() + at, nbytes);
    at += nbytes;
  }
  return object.value;
}

PyPtr load_plain_pickle(std::string_view bytes, const std::string& file, const TorchLoadOptions& options) {
  UnpickleOptions opts;
  opts.globals = &torch_globals();  // storages come as torch.storage._load_from_bytes records
  opts.opaque_records = options.opaque_records;
  return unpickle(bytes, file, opts).value;
}

}  // namespace ud2m
