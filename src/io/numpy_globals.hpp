// numpy values found in checkpoints (Lightning hyper-parameters, metrics,
// statistics): scalars become Python numbers and arrays become tensors, by
// decoding the data numpy pickles. numpy itself is never involved.
#pragma once
#include "io/pickle.hpp"

namespace ud2m {

// numpy.dtype, numpy.ndarray, numpy[._]core.multiarray.scalar / _reconstruct.
const PyGlobals& numpy_globals();

}  // namespace ud2m
