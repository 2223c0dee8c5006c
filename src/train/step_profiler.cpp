#include "train/step_profiler.hpp"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <filesystem>
#include <set>

#include "core/device.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

namespace ud2m::train {
namespace profiler = torch::autograd::profiler;

StepProfiler::StepProfiler(std::string path, torch::Device device, int skip, int count)
    : path_(std::move(path)), device_(device), skip_(skip), count_(count) {}

StepProfiler::~StepProfiler() {
  if (recording_) profiler::disableProfiler();  // a run that ended (or failed) inside the window: no trace
}

void StepProfiler::before_step() {
  if (path_.empty() || seen_ != skip_) return;
  using torch::profiler::impl::ActivityType;
  const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO, /*shapes=*/false);
  std::set<ActivityType> activities{ActivityType::CPU};
  if (device_.is_cuda()) activities.insert(ActivityType::CUDA);
  profiler::prepareProfiler(config, activities);
  profiler::enableProfiler(config, activities);
  recording_ = true;
}

void StepProfiler::after_step() {
  if (path_.empty()) return;
  ++seen_;
  if (!recording_ || seen_ != skip_ + count_) return;
  synchronize(device_);
  recording_ = false;
  // Written aside and renamed: a trace is whole or absent.
  const std::string partial = path_ + ".partial";
  profiler::disableProfiler()->save(partial);
  UD2M_CHECK(std::filesystem::exists(partial), "could not write the profile '{}'", path_);
  std::filesystem::rename(partial, path_);
  log::info("profiled steps {}..{} of this run into '{}' (python bench/op_times.py {})", skip_ + 1, skip_ + count_,
            path_, path_);
}

}  // namespace ud2m::train
