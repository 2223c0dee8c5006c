// The two containers torch.save writes around its pickle:
//  - zip (torch >= 1.6): <prefix>/data.pkl + one entry <prefix>/data/<key> per
//    storage + <prefix>/byteorder;
//  - legacy (older, or _use_new_zipfile_serialization=False): pickles for the
//    magic number, protocol version and sys_info, then the object pickle, then
//    a pickled list of storage keys, then each storage as an 8-byte element
//    count and its raw bytes.
// Both return the unpickled object, with tensors already rebuilt. So does
// load_plain_pickle, for a bare pickle.dump of objects holding tensors.
#pragma once
#include <memory>
#include <string>
#include <string_view>

#include "io/mapped_file.hpp"
#include "io/pickle.hpp"

namespace ud2m {

struct TorchLoadOptions {
  bool opaque_records = false;  // see UnpickleOptions
  // The mapped file `bytes` lies in, if any: stored storages then become
  // tensors over it without a copy (a checkpoint of several GiB is not held
  // twice), and keep it mapped. Without it every storage is copied.
  std::shared_ptr<const MappedFile> owner;
};

PyPtr load_torch_zip(std::string_view bytes, const std::string& file, const TorchLoadOptions& options = {});
PyPtr load_torch_legacy(std::string_view bytes, const std::string& file, const TorchLoadOptions& options = {});
PyPtr load_plain_pickle(std::string_view bytes, const std::string& file, const TorchLoadOptions& options = {});

}  // namespace ud2m
