#include "io/zip.hpp"

#include <zlib.h>

#include <algorithm>

#include "core/error.hpp"

namespace ud2m {
namespace {

constexpr uint32_t kLocalHeader = 0x04034b50, kCentralHeader = 0x02014b50, kEnd = 0x06054b50,
                   kEnd64 = 0x06064b50, kEnd64Locator = 0x07064b50;

uint64_t le(std::string_view b, uint64_t at, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[at + i]);
  return v;
}

}  // namespace

bool looks_like_zip(std::string_view bytes) {
  return bytes.size() >= 4 && (le(bytes, 0, 4) == kLocalHeader || le(bytes, 0, 4) == kEnd);
}

ZipArchive::ZipArchive(std::string_view bytes, std::string file) : bytes_(bytes), file_(std::move(file)) {
  parse_central_directory();
}

void ZipArchive::parse_central_directory() {
  const uint64_t n = bytes_.size();
  auto fits = [&](uint64_t at, uint64_t len) { return at <= n && len <= n - at; };
  // The end record is within the last 22 + 65535 (comment) bytes.
  uint64_t end = UINT64_MAX;
  if (n >= 22) {
    const uint64_t lowest = n - 22 > 65535 ? n - 22 - 65535 : 0;
    for (uint64_t i = n - 22 + 1; i-- > lowest;)
      if (le(bytes_, i, 4) == kEnd) {
        end = i;
        break;
      }
  }
  UD2M_CHECK(end != UINT64_MAX, "'{}' is truncated or corrupt: its zip directory is missing", file_);
  uint64_t count = le(bytes_, end + 10, 2), dir_size = le(bytes_, end + 12, 4), dir_offset = le(bytes_, end + 16, 4);
  // zip64: the real values live in a second end record, found through a locator.
  if ((count == 0xFFFF || dir_size == 0xFFFFFFFF || dir_offset == 0xFFFFFFFF) && end >= 20 &&
      le(bytes_, end - 20, 4) == kEnd64Locator) {
    uint64_t end64 = le(bytes_, end - 20 + 8, 8);
    UD2M_CHECK(fits(end64, 56) && le(bytes_, end64, 4) == kEnd64,
               "'{}' is truncated or corrupt: its zip64 directory record is missing", file_);
    count = le(bytes_, end64 + 32, 8);
    dir_size = le(bytes_, end64 + 40, 8);
    dir_offset = le(bytes_, end64 + 48, 8);
  }
  UD2M_CHECK(fits(dir_offset, dir_size), "'{}' is truncated or corrupt: its zip directory lies outside the file",
             file_);
  uint64_t at = dir_offset;
  for (uint64_t i = 0; i < count; ++i) {
    UD2M_CHECK(fits(at, 46) && le(bytes_, at, 4) == kCentralHeader,
               "'{}' is corrupt: zip directory entry {} is damaged", file_, i);
    Entry e;
    e.method = static_cast<uint16_t>(le(bytes_, at + 10, 2));
    e.compressed_size = le(bytes_, at + 20, 4);
    e.size = le(bytes_, at + 24, 4);
    uint64_t name_len = le(bytes_, at + 28, 2), extra_len = le(bytes_, at + 30, 2), comment_len = le(bytes_, at + 32, 2);
    e.local_offset = le(bytes_, at + 42, 4);
    UD2M_CHECK(fits(at + 46, name_len + extra_len + comment_len), "'{}' is corrupt: zip directory entry {} is damaged",
               file_, i);
    std::string name(bytes_.substr(at + 46, name_len));
    // zip64 extra field: 64-bit values for exactly those fields stored as 0xFFFFFFFF, in this order.
    for (uint64_t x = at + 46 + name_len; x + 4 <= at + 46 + name_len + extra_len;) {
      uint64_t id = le(bytes_, x, 2), len = le(bytes_, x + 2, 2), p = x + 4;
      UD2M_CHECK(p + len <= at + 46 + name_len + extra_len, "'{}' is corrupt: zip entry '{}' has a bad extra field",
                 file_, name);
      if (id == 0x0001) {
        auto next = [&](uint64_t& field) {
          if (field != 0xFFFFFFFF) return;
          UD2M_CHECK(p + 8 <= x + 4 + len, "'{}' is corrupt: zip entry '{}' has a short zip64 field", file_, name);
          field = le(bytes_, p, 8);
          p += 8;
        };
        next(e.size);
        next(e.compressed_size);
        next(e.local_offset);
      }
      x += 4 + len;
    }
    entries_[name] = e;
    at += 46 + name_len + extra_len + comment_len;
  }
}

std::vector<std::string> ZipArchive::names() const {
  std::vector<std::string> out;
  for (auto& [name, e] : entries_) out.push_back(name);
  return out;
}

std::string_view ZipArchive::raw(const std::string& name, const Entry*& entry) const {
  auto it = entries_.find(name);
  UD2M_CHECK(it != entries_.end(), "'{}' is incomplete: it lacks the entry '{}'", file_, name);
  const Entry& e = it->second;
  entry = &e;
  const uint64_t n = bytes_.size();
  UD2M_CHECK(e.local_offset <= n && n - e.local_offset >= 30 && le(bytes_, e.local_offset, 4) == kLocalHeader,
             "'{}' is truncated or corrupt: zip entry '{}' has no valid header", file_, name);
  uint64_t data = e.local_offset + 30 + le(bytes_, e.local_offset + 26, 2) + le(bytes_, e.local_offset + 28, 2);
  UD2M_CHECK(data <= n && e.compressed_size <= n - data,
             "'{}' is truncated or corrupt: zip entry '{}' ({} bytes) runs past the end of the file", file_, name,
             e.compressed_size);
  return bytes_.substr(data, e.compressed_size);
}

std::string_view ZipArchive::read(const std::string& name) const {
  const Entry* e = nullptr;
  auto data = raw(name, e);
  UD2M_CHECK(e->method == 0, "'{}': zip entry '{}' is compressed where ud2m expects it stored", file_, name);
  UD2M_CHECK(e->size == e->compressed_size, "'{}' is corrupt: zip entry '{}' has inconsistent sizes", file_, name);
  return data;
}

std::string_view ZipArchive::read(const std::string& name, std::string& scratch) const {
  const Entry* e = nullptr;
  auto data = raw(name, e);
  if (e->method == 0) {
    UD2M_CHECK(e->size == e->compressed_size, "'{}' is corrupt: zip entry '{}' has inconsistent sizes", file_, name);
    return data;
  }
  UD2M_CHECK(e->method == 8, "'{}': zip entry '{}' uses compression method {}, which ud2m does not read (only stored "
             "and deflate)", file_, name, e->method);
  // The declared size bounds the allocation: deflate expands at most ~1032x.
  UD2M_CHECK(e->size / 1100 <= e->compressed_size, "'{}' is corrupt: zip entry '{}' claims an impossible size", file_,
             name);
  scratch.assign(e->size, '\0');
  z_stream z{};
  UD2M_CHECK(inflateInit2(&z, -MAX_WBITS) == Z_OK, "cannot start zlib to read '{}'", file_);  // raw deflate
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = 0;
  z.next_out = reinterpret_cast<Bytef*>(scratch.data());
  z.avail_out = 0;
  // zlib counts in 32 bits: feed and drain in chunks so entries over 4 GiB work.
  uint64_t in_left = data.size(), out_left = scratch.size();
  int rc = Z_OK;
  while (rc == Z_OK) {
    if (z.avail_in == 0 && in_left) {
      z.avail_in = static_cast<uInt>(std::min<uint64_t>(in_left, 1u << 30));
      in_left -= z.avail_in;
    }
    if (z.avail_out == 0 && out_left) {
      z.avail_out = static_cast<uInt>(std::min<uint64_t>(out_left, 1u << 30));
      out_left -= z.avail_out;
    }
    rc = inflate(&z, Z_NO_FLUSH);
    // Out of input or output space: go on only if the next chunk of it exists.
    if (rc == Z_BUF_ERROR && ((z.avail_in == 0 && in_left) || (z.avail_out == 0 && out_left))) rc = Z_OK;
  }
  const uint64_t produced = scratch.size() - out_left - z.avail_out;
  inflateEnd(&z);
  UD2M_CHECK(rc == Z_STREAM_END && produced == e->size,
             "'{}' is truncated or corrupt: zip entry '{}' does not inflate to its declared {} bytes", file_, name,
             e->size);
  return scratch;
}

}  // namespace ud2m
