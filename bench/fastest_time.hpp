// The C++ benchmarks' timer.
#pragma once
#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace ud2m::bench {

// Fastest of `reps` timed runs after two warm-ups, in milliseconds: on a shared
// machine the minimum is the least disturbed by other processes.
inline double time_ms(const std::function<void()>& fn, int reps = 15) {
  fn(), fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto start = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  return *std::min_element(t.begin(), t.end());
}

}  // namespace ud2m::bench
