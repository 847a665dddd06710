// The int8-activation matvec's building blocks (matmul_q8.h), shared by the one-matrix
// kernel (matmul_q8.cu) and the grouped routed-experts kernel (matmul_q8_experts.cu):
// the activation block as a lane loads it, the per-type weight decoders (one lane
// decodes one 32-value block of a 256-value group staged in shared memory), the
// IQ2_XXS selector tables and the warp's staging copy.
#pragma once

#include <cuda_fp16.h>
#include <cuda_pipeline.h>

#include <cstdint>

namespace ds4::cuda {

// IQ2XXSFast's selector tables on the device (384 words: grid_sel[256], then
// sign_sel[128]); made on first use, which must not be inside a graph capture.
const uint32_t* q8_iq2_selectors();

namespace q8 {

constexpr uint32_t kBlockMetaBytes = 8;  // per 32 activations: f32 d + 2 × int16 sums
constexpr uint32_t kIq2SelWords = 384;

__device__ __forceinline__ float f16(uint32_t bits) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
}
__device__ __forceinline__ uint32_t sm_u16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }
__device__ __forceinline__ uint32_t sm_u32(const uint8_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

// ---- weight formats: one lane decodes one 32-value block of a staged 256-value group ----

struct XBlock {  // one token's activation block, as loaded by its lane
    int q[8];
    float d;
    int sums;  // int16 Σq[0..15] | int16 Σq[16..31] << 16
    __device__ int sum_lo() const { return static_cast<int16_t>(sums & 0xffff); }
    __device__ int sum_hi() const { return sums >> 16; }
};

struct WBlock {  // a lane's decoded weight block: 8 words of 4 signed/unsigned codes
    int v[8];
    float a, b;  // per-format scales
    int s0, s1;  // per-format sub-block scale bytes
};

struct Iq2Tables {
    const uint32_t* grid_sel;  // per grid entry: nibble i = level (0..2) of value i
    const uint32_t* sign_sel;  // per 7-bit sign index: nibble i = 4 when value i is negated
};

__device__ __forceinline__ int dot4(const int* v, const int* x) {
    return __dp4a(v[0], x[0], __dp4a(v[1], x[1], __dp4a(v[2], x[2], __dp4a(v[3], x[3], 0))));
}

// Q8_0: 8 blocks of 34 bytes per group; block b's codes start 2 bytes in, so half the
// blocks are only 2-byte aligned: those words are funnel-shifted from aligned pairs.
struct Q8_0Fast {
    static constexpr int kGroupBytes = 272, kUnit = 1, kChunkGroups = 4;
    __device__ static void decode(const uint8_t* g, int blk, WBlock& w, const Iq2Tables&) {
        const uint8_t* base = g + 34 * blk;
        w.a = f16(sm_u16(base));
        const uint8_t* p = base + 2;
        if ((reinterpret_cast<uintptr_t>(p) & 3) == 0) {
#pragma unroll
            for (int k = 0; k < 8; ++k) w.v[k] = static_cast<int>(sm_u32(p + 4 * k));
        } else {
            const uint8_t* al = p - 2;
            uint32_t words[9];
#pragma unroll
            for (int k = 0; k < 9; ++k) words[k] = sm_u32(al + 4 * k);
#pragma unroll
            for (int k = 0; k < 8; ++k) w.v[k] = static_cast<int>(__funnelshift_r(words[k], words[k + 1], 16));
        }
    }
    __device__ static float dot(const WBlock& w, const XBlock& x) {
        return x.d * w.a * static_cast<float>(dot4(w.v, x.q) + dot4(w.v + 4, x.q + 4));
    }
};

// Q2_K block b of a super-block: codes at qs byte 32·(b/4) + i, bit shift 2·(b%4); its two
// 16-value sub-blocks use scale bytes 2b, 2b+1 (low nibble scale, high nibble min).
struct Q2KFast {
    static constexpr int kGroupBytes = 84, kUnit = 4, kChunkGroups = 8;
    __device__ static void decode(const uint8_t* g, int blk, WBlock& w, const Iq2Tables&) {
        const uint8_t* qs = g + 16 + 32 * (blk / 4);
        const int shift = 2 * (blk % 4);
#pragma unroll
        for (int k = 0; k < 8; ++k) w.v[k] = static_cast<int>((sm_u32(qs + 4 * k) >> shift) & 0x03030303u);
        const uint32_t sc = sm_u16(g + 2 * blk);
        w.s0 = static_cast<int>(sc & 0xff);
        w.s1 = static_cast<int>(sc >> 8);
        const uint32_t dd = sm_u32(g + 80);
        w.a = f16(dd & 0xffff);
        w.b = f16(dd >> 16);
    }
    __device__ static float dot(const WBlock& w, const XBlock& x) {
        const int sumq = (w.s0 & 15) * dot4(w.v, x.q) + (w.s1 & 15) * dot4(w.v + 4, x.q + 4);
        const int summ = (w.s0 >> 4) * x.sum_lo() + (w.s1 >> 4) * x.sum_hi();
        return x.d * (w.a * static_cast<float>(sumq) - w.b * static_cast<float>(summ));
    }
};

// Q4_K block b = sub-block b: codes at qs byte 32·(b/2) + i, high nibble for odd b; 6-bit
// scale and min packed in the 12 scale bytes.
struct Q4KFast {
    static constexpr int kGroupBytes = 144, kUnit = 1, kChunkGroups = 8;
    __device__ static void decode(const uint8_t* g, int blk, WBlock& w, const Iq2Tables&) {
        // 144-byte groups keep qs 16-byte aligned: two 16-byte shared loads
        const auto* qs = reinterpret_cast<const uint4*>(g + 16 + 32 * (blk / 2));
        const uint4 lo = qs[0], hi = qs[1];
        const uint32_t words[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
        const int shift = 4 * (blk % 2);
#pragma unroll
        for (int k = 0; k < 8; ++k) w.v[k] = static_cast<int>((words[k] >> shift) & 0x0F0F0F0Fu);
        const uint8_t* sc = g + 4;
        int scale = 0, min = 0;
        if (blk < 4) {
            scale = sc[blk] & 63;
            min = sc[blk + 4] & 63;
        } else {
            scale = (sc[blk + 4] & 0x0F) | ((sc[blk - 4] >> 6) << 4);
            min = (sc[blk + 4] >> 4) | ((sc[blk] >> 6) << 4);
        }
        const uint32_t dd = sm_u32(g);
        w.a = f16(dd & 0xffff) * static_cast<float>(scale);
        w.b = f16(dd >> 16) * static_cast<float>(min);
    }
    __device__ static float dot(const WBlock& w, const XBlock& x) {
        const int sumq = dot4(w.v, x.q) + dot4(w.v + 4, x.q + 4);
        return x.d * (w.a * static_cast<float>(sumq) - w.b * static_cast<float>(x.sum_lo() + x.sum_hi()));
    }
};

// __byte_perm reads only the low 3 bits of each selector nibble, so nvcc masks the
// selector with 0x7777 first (a LOP3 per call); PTX prmt's default mode takes bit 3 of a
// nibble as "replicate the byte's sign". The IQ2_XXS selectors' nibbles are at most 6
// (level 0..2 + 4·sign: bit 3 clear), where the two agree: prmt itself, one instruction
// less per four decoded values. Only for such selectors.
__device__ __forceinline__ uint32_t prmt_low_nibbles(uint32_t a, uint32_t b, uint32_t sel) {
    uint32_t d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
    return d;
}

// IQ2_XXS block b: 8 bytes at 2 + 8b (4 grid indices, then 4 × 7 sign bits and a 4-bit
// scale). A grid entry holds 8 magnitudes from {8, 25, 43}, i.e. 8 two-bit levels; the
// tables hold them as byte-permute selectors (one nibble per value: level + 4·sign), so
// one __byte_perm over the constant pair ({8, 25, 43}, {−8, −25, −43}) yields four signed
// codes. Both tables are 32-bit (1 KB and 512 B): a random lookup costs half the shared
// memory wavefronts of a 64-bit grid entry, and the signs need no extra arithmetic.
struct IQ2XXSFast {
    static constexpr int kGroupBytes = 66, kUnit = 8, kChunkGroups = 8;
    static constexpr uint32_t kPos = 0x002B1908u, kNeg = 0x00D5E7F8u;  // bytes 8, 25, 43 and their negations
    __device__ static void decode(const uint8_t* g, int blk, WBlock& w, const Iq2Tables& tab) {
        const uint8_t* q = g + 2 + 8 * blk;
        const uint32_t idx = sm_u16(q) | (sm_u16(q + 2) << 16);
        const uint32_t aux = sm_u16(q + 4) | (sm_u16(q + 6) << 16);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const uint32_t sel = tab.grid_sel[(idx >> (8 * k)) & 0xff] | tab.sign_sel[(aux >> (7 * k)) & 127];
            w.v[2 * k] = static_cast<int>(prmt_low_nibbles(kPos, kNeg, sel));  // prmt reads the low 16 bits
            w.v[2 * k + 1] = static_cast<int>(prmt_low_nibbles(kPos, kNeg, sel >> 16));
        }
        w.a = f16(sm_u16(g)) * (0.5f + static_cast<float>(aux >> 28)) * 0.25f;
    }
    __device__ static float dot(const WBlock& w, const XBlock& x) {
        return x.d * w.a * static_cast<float>(dot4(w.v, x.q) + dot4(w.v + 4, x.q + 4));
    }
};

template <class F>
constexpr int kChunkBytes = F::kGroupBytes * F::kChunkGroups;

// Starts copying `bytes` (even) from global to this warp's shared buffer: 16-byte
// asynchronous copies (cp.async) when both ends allow, so the copy runs while the warp
// computes on its other buffer; otherwise plain 2-byte loads and stores, complete on
// return. Either way the caller commits, waits and __syncwarp()s before reading.
__device__ __forceinline__ void stage_async(uint8_t* dst, const uint8_t* src, uint32_t bytes, bool wide,
                                            uint32_t lane) {
    if (wide) {
        for (uint32_t o = 16 * lane; o < bytes; o += 512) __pipeline_memcpy_async(dst + o, src + o, 16);
    } else {
#pragma unroll 4
        for (uint32_t o = 2 * lane; o < bytes; o += 64)
            *reinterpret_cast<uint16_t*>(dst + o) = __ldg(reinterpret_cast<const unsigned short*>(src + o));
    }
}

__device__ __forceinline__ XBlock load_xblock(const uint8_t* tok, uint32_t cols, uint64_t block) {
    XBlock x;
    const int4 a = *reinterpret_cast<const int4*>(tok + block * 32);
    const int4 b = *reinterpret_cast<const int4*>(tok + block * 32 + 16);
    x.q[0] = a.x, x.q[1] = a.y, x.q[2] = a.z, x.q[3] = a.w;
    x.q[4] = b.x, x.q[5] = b.y, x.q[6] = b.z, x.q[7] = b.w;
    const int2 m = *reinterpret_cast<const int2*>(tok + cols + block * kBlockMetaBytes);
    x.d = __int_as_float(m.x);
    x.sums = m.y;
    return x;
}

// The IQ2_XXS selectors into a block's shared copy (every thread of the block calls it;
// the caller's __syncthreads() publishes them).
__device__ __forceinline__ void load_iq2_selectors(const uint32_t* __restrict__ src, uint32_t* s_grid,
                                                   uint32_t* s_sign) {
    for (uint32_t i = threadIdx.x; i < 256; i += blockDim.x) s_grid[i] = src[i];
    for (uint32_t i = threadIdx.x; i < 128; i += blockDim.x) s_sign[i] = src[256 + i];
}

}  // namespace q8
}  // namespace ds4::cuda
