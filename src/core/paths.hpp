// File-name helpers shared by every command.
#pragma once
#include <string>

namespace ud2m {

// True when `path` ends in `extension` (e.g. ".png"), ignoring case.
bool has_extension(const std::string& path, const std::string& extension);
// `path` with its extension replaced (y.png -> y.json).
std::string replace_extension(const std::string& path, const std::string& extension);

}  // namespace ud2m
