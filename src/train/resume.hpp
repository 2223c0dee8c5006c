// Resuming a training run: the options saved in its checkpoint win, except
// the step target, output folder, time limit, device and profile, which belong to the
// invocation (a rerun may extend the run, run for another while, or move to a
// GPU: every trainer draws its random numbers on the CPU).
#pragma once
#include <filesystem>
#include <string>

#include "core/error.hpp"
#include "io/safetensors.hpp"

namespace ud2m::train {

// True (and `options` replaced) when `checkpoint` exists; `key` is the
// metadata entry holding {"options": ...}, `what` names the run in errors.
template <class Options>
bool resume_options(const std::string& checkpoint, const std::string& key, const char* what, Options& options) {
  if (!std::filesystem::exists(checkpoint)) return false;
  auto meta = read_safetensors(checkpoint).metadata;
  UD2M_CHECK(meta.count(key), "'{}' is not a {} checkpoint", checkpoint, what);
  auto saved = Options::from_json(nlohmann::json::parse(meta.at(key)).at("options"));
  saved.steps = options.steps;
  saved.out_dir = options.out_dir;
  saved.max_seconds = options.max_seconds;
  saved.profile = options.profile;
  saved.device = options.device;
  options = saved;
  return true;
}

}  // namespace ud2m::train
