// Where a training step's time goes: a few steps of a run recorded by
// PyTorch's profiler (CPU operators and, on a GPU, its kernels) into a Chrome
// trace, which bench/op_times.py sums by operator and by kernel. For the
// question a GPU visit has to answer in minutes, e.g. why a run makes 2 steps/s.
#pragma once
#include <torch/types.h>

#include <string>

namespace ud2m::train {

class StepProfiler {
 public:
  // Records steps skip+1 .. skip+count of this invocation (the first ones
  // warm up allocators and kernels) into `path`; an empty path records nothing.
  StepProfiler(std::string path, torch::Device device, int skip = 3, int count = 5);
  ~StepProfiler();
  void before_step();
  void after_step();

 private:
  std::string path_;
  torch::Device device_;
  int skip_, count_, seen_ = 0;
  bool recording_ = false;
};

}  // namespace ud2m::train
