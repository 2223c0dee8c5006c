#include "core/paths.hpp"

#include <cctype>
#include <filesystem>

namespace ud2m {

bool has_extension(const std::string& path, const std::string& extension) {
  auto ext = std::filesystem::path(path).extension().string();
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == extension;
}

std::string replace_extension(const std::string& path, const std::string& extension) {
  return std::filesystem::path(path).replace_extension(extension).string();
}

}  // namespace ud2m
