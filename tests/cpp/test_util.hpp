// Shared helpers for the GoogleTest suite.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace ud2m::test {

// Reference files written by tests/python/make_refs.py (the `python_refs` fixture).
// Paths come from the build (tests/CMakeLists.txt); the environment may override.
inline std::string setting(const char* name, const char* built_in) {
  const char* value = std::getenv(name);
  return value ? value : built_in;
}

inline std::filesystem::path refs_dir(const std::string& area) {
  return std::filesystem::path(setting("UD2M_REFS_DIR", UD2M_DEFAULT_REFS_DIR)) / area;
}

inline std::string ud2m_binary() { return setting("UD2M_BIN", UD2M_DEFAULT_BIN); }

inline std::string python() { return setting("UD2M_PYTHON", UD2M_DEFAULT_PYTHON); }

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

// Expects `statement` to throw an exception whose message contains `text`.
#define EXPECT_THROW_MSG(statement, text)                                                   \
  do {                                                                                      \
    try {                                                                                   \
      statement;                                                                            \
      ADD_FAILURE() << #statement " did not throw";                                         \
    } catch (const std::exception& e_) {                                                    \
      EXPECT_NE(std::string(e_.what()).find(text), std::string::npos) << e_.what();         \
    }                                                                                       \
  } while (0)

// ‖b − a‖/‖a‖ over the tensors of `a` whose names start with one of
// `prefixes` (e.g. two training checkpoints' weights); fails if that set is 0.
template <class TensorMap>
double relative_difference(const TensorMap& a, const TensorMap& b, const std::vector<std::string>& prefixes) {
  double diff = 0, norm = 0;
  for (auto& [name, t] : a) {
    bool wanted = false;
    for (auto& p : prefixes) wanted = wanted || name.rfind(p, 0) == 0;
    if (!wanted) continue;
    diff += (b.at(name) - t).square().sum().template item<double>();
    norm += t.square().sum().template item<double>();
  }
  EXPECT_GT(norm, 0) << prefixes[0];
  return std::sqrt(diff / norm);
}

inline double max_rel_error(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

}  // namespace ud2m::test
