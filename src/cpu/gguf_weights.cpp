#include "cpu/gguf_weights.h"

#include "ds4/error.h"

namespace ds4::cpu {

namespace {

TensorView gguf_view(const gguf::File& f, const gguf::TensorInfo& t) {
    if (!ggml_type_info(t.type))
        fail(f.path(), ": tensor ", t.name, " has unknown type ", ggml_type_name(t.type));
    TensorView v;
    if (t.n_dims > v.dims.size())
        fail(f.path(), ": tensor ", t.name, " has ", t.n_dims, " dims, at most ", v.dims.size(),
             " are supported");
    v.type = t.ggml_type();
    v.n_dims = t.n_dims;
    for (uint32_t i = 0; i < t.n_dims; ++i) v.dims[i] = t.dims[i];
    v.data = f.tensor_data(t).data();
    return v;
}

}  // namespace

void add_gguf_views(WeightSet& ws, const gguf::File& f) {
    for (const gguf::TensorInfo& t : f.tensors()) ws.add_view(std::string(t.name), gguf_view(f, t));
}

}  // namespace ds4::cpu
