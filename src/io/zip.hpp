// A minimal reader of zip archives held in memory, enough for torch.save's
// container: entries are found through the central directory (torch's writer
// puts sizes there, not in local headers), zip64 is understood (checkpoints
// over 4 GiB). torch writes entries stored (uncompressed), which are returned
// without a copy; deflated entries (an archive re-zipped by a user tool) are
// inflated with zlib.
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
  // The bytes of one entry; throws Error if absent, corrupt or out of bounds.
  // A stored entry is a view into the archive's bytes; a deflated one is
  // inflated into `scratch`, which the view then refers to.
  std::string_view read(const std::string& name, std::string& scratch) const;
  std::string_view read(const std::string& name) const;  // stored entries only

 private:
  struct Entry {
    uint64_t local_offset = 0, compressed_size = 0, size = 0;
    uint16_t method = 0;
  };
  void parse_central_directory();
  std::string_view raw(const std::string& name, const Entry*& entry) const;

  std::string_view bytes_;
  std::string file_;
  std::map<std::string, Entry> entries_;
};

// True if `bytes` starts like a zip archive.
bool looks_like_zip(std::string_view bytes);

}  // namespace ud2m
