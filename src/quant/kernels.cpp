// Run-time kernel selection. The AVX2 / AVX-512 tables live in translation units compiled
// with -mavx2 / -mavx512* (simd.cmake); nothing in them may run before the CPUID check
// below has said the CPU (and the OS, for the wider register state) supports them.
// __builtin_cpu_supports reads CPUID once and also checks XGETBV, so "avx512f" is only
// reported when the OS saves the ZMM/opmask state.
#include <cstdlib>
#include <string>
#include <string_view>

#include "ds4/error.h"
#include "quant/kernels.h"
#include "quant/kernels_detail.h"

namespace ds4::quant {

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::Scalar: return "scalar";
        case Isa::AVX2: return "avx2";
        case Isa::AVX512: return "avx512";
    }
    return "unknown";
}

const Kernels& scalar_kernels() { return detail::kScalarKernels; }

#if defined(DS4_QUANT_X86)

const Kernels* avx2_kernels() {
    static const bool supported = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    }();
    return supported ? &detail::kAvx2Kernels : nullptr;
}

const Kernels* avx512_kernels() {
    // The AVX-512 file also uses AVX2 / FMA / F16C instructions on 256-bit vectors.
    static const bool supported = [] {
        __builtin_cpu_init();
        return avx2_kernels() != nullptr && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq");
    }();
    return supported ? &detail::kAvx512Kernels : nullptr;
}

#else

const Kernels* avx2_kernels() { return nullptr; }
const Kernels* avx512_kernels() { return nullptr; }

#endif

std::vector<const Kernels*> available_kernels() {
    std::vector<const Kernels*> out{&scalar_kernels()};
    if (const Kernels* k = avx2_kernels()) out.push_back(k);
    if (const Kernels* k = avx512_kernels()) out.push_back(k);
    return out;
}

namespace {

std::string available_names() {
    std::string names;
    for (const Kernels* k : available_kernels()) {
        if (!names.empty()) names += ", ";
        names += isa_name(k->isa);
    }
    return names;
}

#if defined(DS4_QUANT_X86)
// The default on AVX-512 hosts: AVX-512 dequantizers, activation quantizers and float
// dots, but the AVX2 integer dots. On an Intel Xeon (family 6 model 207, 16-core VM),
// with L2-resident rows and CPU time, the AVX2 dots took 10.2 / 10.7 / 22 / 1.6 ns per
// block (Q2_K / Q4_K / IQ2_XXS / Q8_0) against 11.3 / 12.1 / 28 / 1.6 for AVX-512:
// these kernels are bound by the shuffle port, which 512-bit vectors do not widen,
// while the AVX-512 dequantizers were up to 2× faster (bench/RESULTS.md). All dots of
// both tables give the same bits for the integer formats, so the mix changes no result.
const Kernels& avx512_with_avx2_dots() {
    static const Kernels mixed = [] {
        Kernels k = detail::kAvx512Kernels;
        k.dot_q2_K_q8_K = detail::kAvx2Kernels.dot_q2_K_q8_K;
        k.dot_q4_K_q8_K = detail::kAvx2Kernels.dot_q4_K_q8_K;
        k.dot_iq2_xxs_q8_K = detail::kAvx2Kernels.dot_iq2_xxs_q8_K;
        k.dot_q8_0_q8_0f = detail::kAvx2Kernels.dot_q8_0_q8_0f;
        return k;
    }();
    return mixed;
}
#endif

const Kernels& default_kernels() {
#if defined(DS4_QUANT_X86)
    if (avx512_kernels() != nullptr) return avx512_with_avx2_dots();
#endif
    return *available_kernels().back();
}

// DS4_ISA pins the kernels to one ISA's table (for A/B runs and for tests on hosts with
// several ISAs); asking for one the CPU lacks is an error rather than a silent fallback.
const Kernels& select_kernels() {
    const char* env = std::getenv("DS4_ISA");
    if (env == nullptr || *env == '\0') return default_kernels();
    const std::string_view want(env);
    for (const Kernels* k : available_kernels()) {
        if (want == isa_name(k->isa)) return *k;
    }
    if (want != "scalar" && want != "avx2" && want != "avx512") {
        fail("DS4_ISA=", want, ": unknown instruction set (expected scalar, avx2 or avx512)");
    }
    fail("DS4_ISA=", want, ": not supported by this CPU or build (available: ",
         available_names(), ")");
}

}  // namespace

const Kernels& best_kernels() {
    static const Kernels& selected = select_kernels();
    return selected;
}

}  // namespace ds4::quant
