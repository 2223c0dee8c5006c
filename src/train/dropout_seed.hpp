// Dropout draws from the default generator of the device it runs on. Seeding
// it at every step from (seed, step, rank) gives data-parallel ranks
// independent masks and makes a resume exact without saving that generator.
// (Masks depend on the split, so W ranks match one process only without
// dropout.)
#pragma once
#include <ATen/Context.h>

#include <cstdint>
#include <mutex>

namespace ud2m::train {

inline void seed_dropout(uint64_t seed, int64_t step, int rank, const c10::Device& device = c10::kCPU) {
  seed ^= 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(step + 1);
  seed ^= 0xBF58476D1CE4E5B9ull * static_cast<uint64_t>(rank + 1);
  auto generator = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_current_seed(seed);
}

}  // namespace ud2m::train
