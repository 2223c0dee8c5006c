// One entry point for every model file ud2m reads: the format is told by the
// bytes, not the extension (.pt/.pth/.ckpt/.bin/.safetensors all occur).
//
// Supported: safetensors; torch.save zip (torch >= 1.6, also diffusers'
// diffusion_pytorch_model.bin and Lightning .ckpt); torch.save legacy
// (pre-1.6 or _use_new_zipfile_serialization=False); plain pickle.dump files
// of objects holding tensors (EDM2 network snapshots: their storages are
// torch.storage._load_from_bytes records, read as legacy saves; the objects
// themselves need opaque_records). Refused with a clear
// Error: the pre-2018 tar format, TorchScript archives, compressed zips.
//
// A torch checkpoint's pickle is a tree of dicts/lists; it is flattened to
// dotted names ({"state_dict": {"w": t}, "epoch": 3} -> tensor "state_dict.w",
// metadata "epoch" = "3").
#pragma once
#include <string>
#include <string_view>

#include "io/safetensors.hpp"

namespace ud2m {

enum class CheckpointFormat { Safetensors, TorchZip, TorchLegacy, Pickle, TorchTar, Unknown };

CheckpointFormat detect_checkpoint_format(std::string_view bytes);
CheckpointFormat detect_checkpoint_file_format(const std::string& path);  // from its first bytes; Unknown if unreadable
const char* checkpoint_format_name(CheckpointFormat format);  // "safetensors", "torch.save (zip)", ...

struct CheckpointOptions {
  // Keep instances of unknown classes as records and collect their tensors
  // instead of refusing the file. Still executes no code. Off by default.
  bool opaque_records = false;
};

// Zip checkpoints' tensors are views of the memory-mapped file (io/mapped_file.hpp:
// no heap copy; writing to one copies its pages, never the file), which they
// keep mapped; parse_checkpoint copies them out of `bytes`.
TensorFile read_checkpoint(const std::string& path, const CheckpointOptions& options = {});
TensorFile parse_checkpoint(const std::string& bytes, const std::string& name_for_errors,
                            const CheckpointOptions& options = {});

// The model weights of a checkpoint: drops a single wrapper around them
// ("state_dict." of Lightning, "model."/"module."/"model_state_dict."/"net."
// when every tensor lies under it, or when the other top-level entries are
// training state such as "optimizer."; "ema." and the like when nothing else
// is saved), and DataParallel's "module." inside it. Otherwise returns every
// tensor unchanged.
TensorMap state_dict_of(const TensorFile& file);

}  // namespace ud2m
