// Files appear whole or not at all: data goes to a temporary file beside the
// target, is flushed to disk, and is renamed over the target only on success.
#pragma once
#include <cstdio>
#include <functional>
#include <string>

namespace ud2m {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();  // removes the temporary file unless commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  std::FILE* handle() { return file_; }
  void write(const void* data, size_t size);
  void commit();  // flush, fsync, rename; throws Error (e.g. disk full)
  const std::string& path() const { return path_; }

 private:
  std::string path_, temp_path_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

// Writes `bytes` to `path` atomically.
void write_file_atomic(const std::string& path, const std::string& bytes);
// Reads a whole file; throws Error naming the path if it cannot.
std::string read_file(const std::string& path);

}  // namespace ud2m
