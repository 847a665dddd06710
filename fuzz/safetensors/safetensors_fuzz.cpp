// libFuzzer harness: any byte string must either parse as safetensors (and then every
// tensor decodes, and every tensor name maps through the GGUF name map consistently) or
// fail with ds4::Error. Anything else (crash, sanitizer report, other exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "ds4/error.h"
#include "gguf/safetensors.h"
#include "quant/checkpoint.h"

namespace {

using namespace ds4;

// gguf_name_for_official and the forward functions must be inverse on every name.
void check_name_map(const std::string& name) {
    const std::optional<quant::GgufTarget> target = quant::gguf_name_for_official(name);
    if (!target) return;
    const std::optional<std::string> weight =
        target->expert ? quant::official_expert_name(target->name, *target->expert)
                       : quant::official_name_for_gguf(target->name);
    if (!weight || (target->scale ? quant::official_scale_name(*weight) : *weight) != name)
        std::abort();
}

void decode_everything(const st::File& f) {
    for (const st::Tensor& t : f.tensors()) {
        if (quant::decode_f32(f, t).size() != t.n_elements) std::abort();
        check_name_map(t.name);
        (void)quant::official_name_for_gguf(t.name);
        (void)quant::official_expert_name(t.name, 1);
        try {
            (void)f.to_i64(t);
            (void)quant::narrow_i64_to_i32({&f, &t});
        } catch (const Error&) {
        }
        try {
            (void)quant::decode_official(f, t.name);
        } catch (const Error&) {
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        decode_everything(st::File::parse({data, size}, "fuzz.safetensors"));
    } catch (const Error&) {
    }
    return 0;
}
