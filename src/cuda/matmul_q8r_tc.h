// Small passes' products with large repacked Q8_0 matrices (kernels.h q8r_*) on the
// tensor cores (issue 8, decode speed). matmul_q8r's exact kernels spend ~8 instructions
// a weight (a code to f32, d · q, one fused multiply-add per token). Here a warp
// multiplies 16 rows by up to 8 tokens with mma.sync m16n8k16: the int8 codes become exact
// f16 integers (two byte permutes and one half subtraction per 4 codes), each Q8_0
// block's f32 dot leaves the tensor core and is scaled by its f32 d, and the activations
// are half precision: each token's 32 values of a block as f16(x · 2^e), e from their
// largest |x| (dev::half_exponent's rule, per block), undone with d. In ncu on an H200,
// 0.17 warp instructions a byte at one token (the exact kernels: 0.25), and 8 tokens take
// the instructions of one; each warp keeps 4 units (16 rows x 128 columns, 8.7 KB) in flight.
//
// Numerics: not the exact path's (x rounded to f16), within 2^-10 · Σ|w · x| of it. A
// (row, token) result depends on the matrix shape only: not on the other tokens of the
// call, their number or chunking (tensor-core columns are independent), nor on the parts
// launched beside it. The K range of a row splits into P slices by the shape only, each
// slice's blocks summed in column order, the slices added in slice order.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <span>

namespace ds4::cuda {

// On unless DS4_CUDA_Q8T=0, and only on sm_80 or newer (decided at first use). Forward
// sets it when it opens; tests switch it for the launches that follow.
bool q8r_tc_enabled();
void set_q8r_tc(bool on);
// Passes of fewer tokens keep the exact kernels (DS4_CUDA_Q8T_MIN in the forward). A single
// token's activations cost as much to round as 8 tokens' (one token per lane quad), and
// on an H200 batch-1 decode was 13 % slower on this path (106-109 vs 122-124 t/s at 43
// layers) while 8 sequences were 17 % faster (305 vs 259 t/s).
inline constexpr uint32_t kQ8rTcMinTokens = 2;
void set_q8r_tc_min_tokens(uint32_t n);

// True when matmul_q8r_tc takes a pass of n_tok tokens through a rows x cols repacked
// matrix: enabled, n_tok at least the minimum, cols a multiple of 512 up to 16384, at
// least 2^20 weights (the demo model's matrices stay exact).
bool q8r_tc_takes(uint64_t rows, uint64_t cols, uint32_t n_tok);

// Parts of one column count: part i's y (n_tok rows of y_stride) = W_i · x_i (n_tok rows
// of x_stride, 16-byte aligned, x_stride a multiple of 4), up to 8 parts in a launch.
struct Q8rTcPart {
    const void* w = nullptr;
    uint64_t rows = 0;
    const float* x = nullptr;
    float* y = nullptr;
    uint64_t y_stride = 0;
};
void matmul_q8r_tc(std::span<const Q8rTcPart> parts, uint64_t cols, uint32_t n_tok,
                   uint64_t x_stride, cudaStream_t s);

}  // namespace ds4::cuda
