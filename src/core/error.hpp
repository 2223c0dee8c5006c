// One error type for everything a user can get wrong: its message is the single
// sentence the CLI prints (it names the file, flag or value at fault).
#pragma once
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>
#include <string>

namespace ud2m {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace ud2m

// Checks a user-facing condition; the message is formatted only on failure.
#define UD2M_CHECK(cond, ...)        \
  do {                               \
    if (!(cond)) ::ud2m::fail(__VA_ARGS__); \
  } while (0)
