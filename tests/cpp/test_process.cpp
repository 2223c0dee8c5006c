#include <gtest/gtest.h>
#include <torch/torch.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "core/process.hpp"

// After configure_process, tensors larger than glibc's mmap threshold come
// from the heap, not from fresh mappings that the kernel page-faults and
// zeroes on every allocation. (That the heap then stays put pass after pass
// is measured on real networks: the same peak RSS after 1, 4 and 12 passes.)
TEST(Process, LargeAllocationsComeFromTheHeap) {
#if !defined(__GLIBC__)
  GTEST_SKIP() << "glibc's malloc only";
#else
  const auto mapped_before = mallinfo2().hblkhd;  // bytes in mmapped blocks
  {
    auto a = torch::empty({48 << 20}, torch::kUInt8).fill_(1);
    EXPECT_GT(mallinfo2().hblkhd, mapped_before);  // glibc's default: a 48 MiB block is a mapping
  }
  ud2m::configure_process();
  const auto mapped = mallinfo2().hblkhd;
  for (int i = 0; i < 3; ++i) {
    auto a = torch::empty({48 << 20}, torch::kUInt8).fill_(1);
    auto b = torch::empty({40 << 20}, torch::kUInt8).fill_(2);
    EXPECT_EQ(mallinfo2().hblkhd, mapped);
  }
  EXPECT_TRUE(at::globalContext().setFlushDenormal(true));  // the CPU supports it
#endif
}
