// The allow-list of torch names a torch.save pickle may use, each implemented
// here without Python: rebuilding a tensor is an as_strided view of the bytes of
// a storage that the container (zip or legacy) already loaded.
#pragma once
#include "io/pickle.hpp"

namespace ud2m {

// torch._utils._rebuild_tensor{,_v2,_v3}, _rebuild_parameter{,_with_state},
// torch.<X>Storage, torch.UntypedStorage, torch.<dtype>, torch.Size, torch.device,
// and numpy_globals().
const PyGlobals& torch_globals();

// A Storage value: `bytes` (1-D uint8, CPU) holding elements of `dtype`.
PyPtr make_storage(torch::Tensor bytes, torch::ScalarType dtype);

// Reverses the byte order of each element in place (checkpoints saved on
// big-endian machines).
void byteswap_storage(torch::Tensor& bytes, torch::ScalarType dtype);

}  // namespace ud2m
