// A minimal reader of zip archives held in memory, enough for torch.save's
// container: entries are found through the central directory (torch's writer
// puts sizes there, not in local headers), zip64 is understood (checkpoints
// over 4 GiB), and entries must be stored uncompressed, as torch writes them.
#pragma once
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace ud2m {

class ZipArchive {
 public:
  // `bytes` must outlive the archive. Throws Error naming `file` if the
  // central directory is missing, truncated or inconsistent.
  ZipArchive(std::string_view bytes, std::string file);

  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  // The bytes of one entry; throws Error if absent, compressed or out of bounds.
  std::string_view read(const std::string& name) const;

 private:
  struct Entry {
    uint64_t local_offset = 0, compressed_size = 0, size = 0;
    uint16_t method = 0;
  };
  void parse_central_directory();

  std::string_view bytes_;
  std::string file_;
  std::map<std::string, Entry> entries_;
};

// True if `bytes` starts like a zip archive.
bool looks_like_zip(std::string_view bytes);

}  // namespace ud2m
