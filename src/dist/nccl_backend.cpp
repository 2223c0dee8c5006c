#include "dist/nccl_backend.hpp"

#include "core/error.hpp"

#ifdef UD2M_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace ud2m::dist {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                    int world, int local_rank) {
#ifdef UD2M_WITH_NCCL
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(local_rank));
  auto options = c10::make_intrusive<c10d::ProcessGroupNCCL::Options>();
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
#else
  (void)store, (void)rank, (void)world, (void)local_rank;
  fail("this ud2m was built without NCCL (no nccl.h or no CUDA LibTorch at build time): "
       "multi-process training on the GPU is unavailable; train on the CPU (Gloo)");
#endif
}

}  // namespace ud2m::dist
