#include "core/image.hpp"

#include <jpeglib.h>
#include <png.h>

#include <csetjmp>
#include <cstring>
#include <vector>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/paths.hpp"

namespace ud2m {
namespace {

// Converts (H, W, C) samples to the (1, C', H, W) float tensor callers expect.
torch::Tensor to_nchw(torch::Tensor hwc, double max_value, int channels) {
  auto x = hwc.permute({2, 0, 1}).to(torch::kFloat32).div(max_value);
  if (x.size(0) == 4 || x.size(0) == 2) x = x.slice(0, 0, x.size(0) - 1);  // drop alpha
  if (channels == 3 && x.size(0) == 1) x = x.expand({3, -1, -1});
  if (channels == 1 && x.size(0) == 3) {
    // ITU-R BT.601 luma, as PIL's convert("L") does.
    auto w = torch::tensor({0.299f, 0.587f, 0.114f}).view({3, 1, 1});
    x = (x * w).sum(0, true);
  }
  return x.unsqueeze(0).contiguous();
}

// ---- PNG -------------------------------------------------------------------

struct PngMemoryReader {
  const std::string* bytes;
  size_t offset;
};

void png_read_from_memory(png_structp png, png_bytep out, png_size_t size) {
  auto* reader = static_cast<PngMemoryReader*>(png_get_io_ptr(png));
  if (reader->offset + size > reader->bytes->size()) png_error(png, "file is truncated");
  std::memcpy(out, reader->bytes->data() + reader->offset, size);
  reader->offset += size;
}

struct PngError {
  std::jmp_buf jump;
  char message[256] = "unknown error";
};

void png_on_error(png_structp png, png_const_charp message) {
  auto* err = static_cast<PngError*>(png_get_error_ptr(png));
  std::snprintf(err->message, sizeof err->message, "%s", message);
  std::longjmp(err->jump, 1);
}
void png_on_warning(png_structp, png_const_charp) {}

torch::Tensor decode_png(const std::string& bytes, const std::string& name, int channels) {
  PngError err;
  PngMemoryReader reader{&bytes, 0};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, png_on_error, png_on_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) fail("out of memory reading '{}'", name);
  // Everything with a destructor is declared before setjmp, so a longjmp
  // back here skips none (libpng's own frames are plain C).
  torch::Tensor pixels;
  std::vector<png_bytep> rows;
  if (setjmp(err.jump)) {
    png_destroy_read_struct(&png, &info, nullptr);
    fail("cannot read PNG '{}': {}", name, err.message);
  }
  png_set_read_fn(png, &reader, png_read_from_memory);
  png_read_info(png, info);
  png_set_expand(png);                 // palette -> RGB, gray < 8 bit -> 8 bit, tRNS -> alpha
  if (png_get_bit_depth(png, info) == 16) png_set_swap(png);  // host byte order (little-endian)
  png_read_update_info(png, info);
  const auto width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  const int depth = png_get_bit_depth(png, info), nchan = png_get_channels(png, info);
  if (static_cast<uint64_t>(width) * height > (1ull << 28)) png_error(png, "image is too large");
  pixels = torch::empty({int64_t(height), int64_t(width), nchan}, depth == 16 ? torch::kInt16 : torch::kUInt8);
  rows.resize(height);
  const size_t stride = png_get_rowbytes(png, info);
  for (size_t r = 0; r < height; ++r) rows[r] = static_cast<png_bytep>(pixels.data_ptr()) + r * stride;
  png_read_image(png, rows.data());
  png_destroy_read_struct(&png, &info, nullptr);
  auto samples = depth == 16 ? pixels.to(torch::kInt32).bitwise_and(0xffff) : pixels;
  return to_nchw(samples, depth == 16 ? 65535.0 : 255.0, channels);
}

torch::Tensor to_hwc_samples(const torch::Tensor& image, int max_value) {
  auto x = image.dim() == 4 ? image.squeeze(0) : image;
  UD2M_CHECK(x.dim() == 3 && (x.size(0) == 1 || x.size(0) == 3),
             "cannot save an image of shape {}: expected (1, C, H, W) or (C, H, W) with C = 1 or 3",
             fmt::join(image.sizes(), "x"));
  x = x.detach().to(torch::kCPU, torch::kFloat32);
  UD2M_CHECK(torch::isfinite(x).all().item<bool>(), "cannot save an image containing NaN or infinite values");
  return x.clamp(0, 1).mul(max_value).round().permute({1, 2, 0}).contiguous();
}

void png_write_to_string(png_structp png, png_bytep data, png_size_t size) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<char*>(data), size);
}
void png_flush_noop(png_structp) {}

// ---- JPEG ------------------------------------------------------------------

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = "unknown error";
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// libjpeg only warns on truncated data and pads with grey; we refuse instead.
void jpeg_on_warning(j_common_ptr cinfo, int level) {
  if (level < 0) jpeg_on_error(cinfo);
}

torch::Tensor decode_jpeg(const std::string& bytes, const std::string& name, int channels) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_on_error;
  err.mgr.emit_message = jpeg_on_warning;
  torch::Tensor pixels;  // declared before setjmp: see decode_png
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    fail("cannot read JPEG '{}': {}", name, err.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space != JCS_GRAYSCALE) cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  pixels = torch::empty({cinfo.output_height, cinfo.output_width, cinfo.output_components}, torch::kUInt8);
  const size_t stride = size_t(cinfo.output_width) * cinfo.output_components;
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = static_cast<JSAMPROW>(pixels.data_ptr()) + cinfo.output_scanline * stride;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return to_nchw(pixels, 255.0, channels);
}

}  // namespace

torch::Tensor decode_image(const std::string& bytes, const std::string& name, int channels) {
  UD2M_CHECK(channels == 0 || channels == 1 || channels == 3, "channels must be 0, 1 or 3, not {}", channels);
  static const unsigned char png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), png_magic, 8) == 0) return decode_png(bytes, name, channels);
  if (bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xff &&
      static_cast<unsigned char>(bytes[1]) == 0xd8 && static_cast<unsigned char>(bytes[2]) == 0xff)
    return decode_jpeg(bytes, name, channels);
  fail("cannot read image '{}': not a PNG or JPEG file", name);
}

torch::Tensor read_image(const std::string& path, int channels) {
  return decode_image(read_file(path), path, channels);
}

std::string encode_png(const torch::Tensor& image, int bit_depth) {
  UD2M_CHECK(bit_depth == 8 || bit_depth == 16, "PNG bit depth must be 8 or 16, not {}", bit_depth);
  auto samples = to_hwc_samples(image, bit_depth == 16 ? 65535 : 255);
  const int64_t height = samples.size(0), width = samples.size(1), nchan = samples.size(2);
  // Big-endian 16-bit samples, as PNG stores them.
  torch::Tensor data;
  if (bit_depth == 8) {
    data = samples.to(torch::kUInt8);
  } else {
    auto v = samples.to(torch::kInt32);
    data = torch::stack({v.bitwise_right_shift(8), v.bitwise_and(0xff)}, -1).to(torch::kUInt8).contiguous();
  }
  std::string out;
  PngError err;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, png_on_error, png_on_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) fail("out of memory writing a PNG");
  if (setjmp(err.jump)) {
    png_destroy_write_struct(&png, &info);
    fail("cannot encode PNG: {}", err.message);
  }
  png_set_write_fn(png, &out, png_write_to_string, png_flush_noop);
  png_set_IHDR(png, info, width, height, bit_depth, nchan == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, 6);
  png_write_info(png, info);
  const size_t stride = size_t(width) * nchan * (bit_depth / 8);
  for (int64_t r = 0; r < height; ++r)
    png_write_row(png, static_cast<png_bytep>(data.data_ptr()) + r * stride);
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return out;
}

std::string encode_jpeg(const torch::Tensor& image, int quality) {
  UD2M_CHECK(quality >= 1 && quality <= 100, "JPEG quality must be in 1..100, not {}", quality);
  auto samples = to_hwc_samples(image, 255).to(torch::kUInt8).contiguous();
  jpeg_compress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_on_error;
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::free(buffer);
    fail("cannot encode JPEG: {}", err.message);
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = samples.size(1);
  cinfo.image_height = samples.size(0);
  cinfo.input_components = samples.size(2);
  cinfo.in_color_space = samples.size(2) == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&cinfo);  // YCbCr with 2x2 (4:2:0) chroma subsampling
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  const size_t stride = size_t(cinfo.image_width) * cinfo.input_components;
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = static_cast<JSAMPROW>(samples.data_ptr()) + cinfo.next_scanline * stride;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string out(reinterpret_cast<char*>(buffer), size);
  std::free(buffer);
  return out;
}

void write_png(const std::string& path, const torch::Tensor& image, int bit_depth) {
  write_file_atomic(path, encode_png(image, bit_depth));
}

void write_image(const std::string& path, const torch::Tensor& image) {
  if (has_extension(path, ".jpg") || has_extension(path, ".jpeg"))
    write_file_atomic(path, encode_jpeg(image, 95));
  else
    write_png(path, image);
}

}  // namespace ud2m
