// Minimal leveled logging to stderr. (Debian 12's spdlog 1.10 does not compile
// against its fmt 9 in the C++20 mode LibTorch 2.15 requires, so we use fmt.)
#pragma once
#include <fmt/format.h>

#include <cstdio>

namespace ud2m::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3, quiet = 4 };
Level& threshold();

template <typename... Args>
void write(Level level, fmt::format_string<Args...> format, Args&&... args) {
  if (level < threshold()) return;
  static const char* names[] = {"debug", "info", "warning", "error"};
  fmt::print(stderr, "ud2m: {}: {}\n", names[static_cast<int>(level)],
             fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... a) { write(Level::info, f, std::forward<Args>(a)...); }
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... a) { write(Level::warn, f, std::forward<Args>(a)...); }
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... a) { write(Level::debug, f, std::forward<Args>(a)...); }

}  // namespace ud2m::log
