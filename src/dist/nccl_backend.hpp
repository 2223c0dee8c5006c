// The NCCL backend lives in its own file: only it needs the CUDA and NCCL
// headers, and it compiles to a clear error where they are missing.
#pragma once
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace ud2m::dist {

// A NCCL process group on cuda:local_rank (made the current device).
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                    int world, int local_rank);

}  // namespace ud2m::dist
