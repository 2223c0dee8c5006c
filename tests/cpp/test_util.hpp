// Shared helpers for the GoogleTest suite.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace ud2m::test {

// Reference files written by tests/python/make_refs.py (the `python_refs` fixture).
inline std::filesystem::path refs_dir(const std::string& area) {
  const char* dir = std::getenv("UD2M_REFS_DIR");
  return std::filesystem::path(dir ? dir : "refs") / area;
}

inline std::string ud2m_binary() {
  const char* bin = std::getenv("UD2M_BIN");
#ifdef UD2M_DEFAULT_BIN
  return bin ? bin : UD2M_DEFAULT_BIN;
#else
  return bin ? bin : "ud2m";
#endif
}

inline std::filesystem::path source_dir() { return UD2M_SOURCE_DIR; }

// A fresh, empty directory for one test.
inline std::filesystem::path temp_dir() {
  auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  auto dir = std::filesystem::temp_directory_path() /
             (std::string("ud2m_test_") + info->test_suite_name() + "_" + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// Runs a shell command, capturing its output.
inline CommandResult run_command(const std::string& command) {
  CommandResult result{-1, {}};
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe)) result.output.append(buffer, n);
  int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

inline CommandResult run_ud2m(const std::string& args) { return run_command(ud2m_binary() + " " + args); }

inline double max_rel_error(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

}  // namespace ud2m::test
