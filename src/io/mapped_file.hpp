// A whole file's bytes, memory-mapped (read-only to everyone else, private
// copy-on-write to us): a checkpoint's tensors can then be views of the page
// cache instead of a heap copy, so loading a .pt of several GiB and building
// its network does not hold the weights twice in anonymous memory — the
// mapped pages are clean and the kernel reclaims them under pressure.
#pragma once
#include <memory>
#include <string>
#include <string_view>

namespace ud2m {

class MappedFile {
 public:
  // Throws Error naming the path if it is a folder or cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::string_view bytes() const { return {data_, size_}; }
  bool contains(std::string_view part) const {
    return part.data() >= data_ && part.data() + part.size() <= data_ + size_;
  }

 private:
  MappedFile(char* data, size_t size) : data_(data), size_(size) {}
  char* data_;
  size_t size_;
};

}  // namespace ud2m
