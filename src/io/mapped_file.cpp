#include "io/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.hpp"

namespace ud2m {

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  std::error_code ec;
  UD2M_CHECK(!std::filesystem::is_directory(path, ec),
             "'{}' is a directory, not a model file (in a diffusers folder, name its "
             "diffusion_pytorch_model.safetensors or .bin)",
             path);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  UD2M_CHECK(fd >= 0, "cannot open '{}': {}", path, std::strerror(errno));
  struct stat info {};
  const bool sized = ::fstat(fd, &info) == 0;
  const int stat_error = errno;
  const auto size = sized ? static_cast<size_t>(info.st_size) : 0;
  void* data = nullptr;
  if (sized && size > 0) {
    // Private and writable: a caller modifying a loaded tensor in place gets its
    // own copy of those pages, never a change to the file.
    data = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  }
  const int map_error = errno;
  ::close(fd);
  UD2M_CHECK(sized, "cannot read '{}': {}", path, std::strerror(stat_error));
  UD2M_CHECK(data != MAP_FAILED, "cannot read '{}': {}", path, std::strerror(map_error));
  if (data) ::madvise(data, size, MADV_WILLNEED);  // read ahead: the whole file is about to be used
  return std::shared_ptr<const MappedFile>(new MappedFile(static_cast<char*>(data), size));
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

}  // namespace ud2m
