#include "core/process.hpp"

#include <ATen/Context.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace ud2m {

void configure_process() {
  at::globalContext().setFlushDenormal(true);
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);               // every allocation from the heap ...
  mallopt(M_TRIM_THRESHOLD, 1 << 30);   // ... which keeps up to 1 GiB of free space at its top
#endif
}

}  // namespace ud2m
