// Binds the tensors of a mapped GGUF into a WeightSet as zero-copy views (spec model.md
// §0: GGUF dims are already the TensorView order, innermost first). The views point into
// the File's mapping, so the File must outlive the WeightSet's users.
#pragma once

#include "cpu/weight_set.h"
#include "gguf/gguf.h"

namespace ds4::cpu {

// Adds one view per tensor of `f` under its GGUF name. Throws ds4::Error naming the file
// and tensor for a tensor of unknown type or with more than 4 dimensions (nothing ds4
// reads has either), and for a name already in `ws`.
void add_gguf_views(WeightSet& ws, const gguf::File& f);

}  // namespace ds4::cpu
