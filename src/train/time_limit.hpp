// A wall-time limit for one invocation of a trainer (e.g. fixed-length jobs
// on a shared GPU): the run stops with a checkpoint and resumes next time.
// Rank 0's clock decides for every rank (one broadcast per check), or the
// ranks would stop at different steps.
#pragma once
#include <chrono>

#include "dist/context.hpp"

namespace ud2m::train {

class TimeLimit {
 public:
  // seconds <= 0: no limit (and no collective per check).
  TimeLimit(double seconds, dist::DistContext& dist, torch::Device device = torch::kCPU)
      : seconds_(seconds), dist_(dist), device_(device), start_(std::chrono::steady_clock::now()) {}

  bool reached() const {
    if (seconds_ <= 0) return false;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    auto flag = torch::tensor({elapsed > seconds_ ? 1.0f : 0.0f}).to(device_);
    dist_.broadcast({flag});
    return flag.item<float>() > 0;
  }
  double seconds() const { return seconds_; }

 private:
  double seconds_;
  dist::DistContext& dist_;
  torch::Device device_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace ud2m::train
