// Image files at the edges of the library: PNG (8/16-bit, gray/RGB/RGBA) and
// JPEG in, PNG (and JPEG for JPEG measurements) out. Pixels are float32 NCHW in
// [0, 1] here; the library works in [-1, 1] (to_model / from_model).
#pragma once
#include <torch/types.h>

#include <string>

namespace ud2m {

// Reads a PNG or JPEG (detected from the file's bytes, not its name) as a
// (1, C, H, W) float32 tensor in [0, 1]. Alpha is dropped. channels = 1 or 3
// converts gray <-> RGB; 0 keeps the file's own count.
torch::Tensor read_image(const std::string& path, int channels = 3);
torch::Tensor decode_image(const std::string& bytes, const std::string& name_for_errors, int channels = 3);

// Writes (1, C, H, W) or (C, H, W), C = 1 or 3, values clamped to [0, 1] and
// rounded; bit_depth 8 or 16. Atomic.
void write_png(const std::string& path, const torch::Tensor& image, int bit_depth = 8);
std::string encode_png(const torch::Tensor& image, int bit_depth = 8);

// Baseline JPEG with 4:2:0 chroma subsampling (libjpeg's standard tables
// scaled by quality), as cameras and the papers' JPEG task do.
std::string encode_jpeg(const torch::Tensor& image, int quality);

// Writes PNG, or JPEG (quality 95) for .jpg/.jpeg names; atomic.
void write_image(const std::string& path, const torch::Tensor& image);

inline torch::Tensor to_model(const torch::Tensor& x01) { return x01 * 2 - 1; }
inline torch::Tensor from_model(const torch::Tensor& x) { return (x + 1) / 2; }

}  // namespace ud2m
