// Run-time kernel selection. The AVX2 / AVX-512 tables live in translation units compiled
// with -mavx2 / -mavx512* (simd.cmake); nothing in them may run before the CPUID check
// below has said the CPU (and the OS, for the wider register state) supports them.
// __builtin_cpu_supports reads CPUID once and also checks XGETBV, so "avx512f" is only
// reported when the OS saves the ZMM/opmask state.
#include <cpuid.h>

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

// clang 14's __builtin_cpu_supports does not know "f16c": read CPUID leaf 1 ECX bit 29.
// (AVX2 being usable already implies the OS saves the YMM state F16C needs.)
static bool has_f16c() {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
}

const Kernels* avx2_kernels() {
    static const bool supported = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
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
// The default on AVX-512 hosts: the AVX-512 table, except the Q4_K dot, which is bound
// by the shuffle port (512-bit vectors do not widen it) and measured faster in its AVX2
// form: ds4-bench-quant, 32×4096 L2-resident matvec, CPU time, median of 3, Intel Xeon
// family 6 model 207 (16-core VM): Q4_K 5.7 µs (AVX2) vs 7.8 µs (AVX-512). The IQ2_XXS
// dot used to be taken from AVX2 too (26.3 vs 31.6 µs); its rewrite (vectorized sign
// decoding, grid rows loaded in halves) made the AVX-512 one the faster (3.4 vs 3.15
// GB/s per core, same host, bench/RESULTS.md). Both tables give the same bits for every
// integer dot, so the mix changes no result.
const Kernels& avx512_with_avx2_q4_K_dot() {
    static const Kernels mixed = [] {
        Kernels k = detail::kAvx512Kernels;
        k.dot_q4_K_q8_K = detail::kAvx2Kernels.dot_q4_K_q8_K;
        return k;
    }();
    return mixed;
}
#endif

const Kernels& default_kernels() {
#if defined(DS4_QUANT_X86)
    if (avx512_kernels() != nullptr) return avx512_with_avx2_q4_K_dot();
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
