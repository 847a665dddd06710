// Tensor-core products for multi-token passes (issue 8: prefill and large batches). The
// matvec kernels (kernels.h, matmul_q8.h) re-read the weights once per <= 8 tokens and
// multiply on CUDA cores; here a block multiplies a 128-row tile of the weights by up to
// 64 tokens with int8 mma.sync (m16n8k32, sm_80+), so each weight is read once per 64
// tokens and the dot products run on the tensor cores.
//
// Numerics (the fast path's, matmul_q8.h): the activations are int8 blocks quantized by
// quantize_q8_activations' rule (d_x = amax/127 per 32 values), the weights their own Q8_0
// codes; each 32-block's integer dot is exact in s32 and is added to an f32 sum as
// s32 · d_w · d_x. Hence the bound of matmul_q8.h against the exact f32 path:
//     |y_mma − y_exact| ≤ Σ_i |w_i| · d_x(i) / 2  (+ f32 rounding).
//
// Half precision (MmaPrecision::Half, the default; $DS4_CUDA_MMA_HALF=0 or
// set_mma_precision(Int8) gives the int8 path above). The int8 kernel was issue bound:
// each 32-block's s32 dot needs its own f32 scaling (convert, two multiplies, an add per
// output), ~32 instructions per mma, 8 % of the int8 peak (H200 ncu). Here the weights
// are dequantized in registers to f16(q · d_w) (one rounding of the exact Q8_0 value)
// and the activations are f16(x · 2^e), e per token so that its largest |x| lands in
// [2^14, 2^15) (no overflow; a power of two, so exact but for f16 rounding), and mma.sync
// m16n8k16 accumulates in f32 across blocks: no per-block epilogue. The result is scaled
// back by 2^−e, exactly. This is also what ds4's Metal prefill does (half tiles,
// model.md §11.3). Per product the relative error is ~2^−11 (each operand's f16
// rounding), far below the int8 path's d_x/2 step, so the bound of the int8 path holds:
//     |y_half − y_exact| ≤ 2^−10 · Σ_i |w_i · x_i| (+ f32 accumulation, + values below
//     2^−28 of the token's largest |x| and weights below 2^−24, flushed by f16).
// The same properties as int8: a (row, token) result depends neither on other tokens
// nor on n_tok nor on the split, and a grouped launch equals its groups' own calls
// (the per-token power of two commutes with rounding: same bits outside f16's subnormals).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ds4::cuda {

// True when the forward should run a product of `rows` rows by n_tok tokens through
// matmul_q8r_mma (the Forward also has its own switch, $DS4_CUDA_MMA=0 or set_mma): n_tok
// is at least the threshold (DS4_CUDA_MMA_MIN, default kMmaMinTokens: decode and small
// batches keep the matvec path and its batch-independent bits) and rows · n_tok at least
// min_work, by default kMmaMinWork (DS4_CUDA_MMA_MIN_WORK=N in the forward): below that the
// grid had under ~32 blocks of 128 x 32 and the matvec kernel, which spreads over every SM,
// was as fast (H200, ds4-bench-cuda: 4096 x 4096 at 16 tokens 0.9x, 1024 x 4096 at 64
// tokens 0.9x). With split-K smaller products gain too (bench/RESULTS.md, cuda-dense-batch:
// 32768 takes q_a and kv at 64 tokens), but the default stays: at 32768 the demo model's
// CudaEngine tests, which compare passes of up to ~220 tokens with the exact path or with
// other pass sizes at 1e-4 / 2e-2, failed (max |dlogit| 0.19-1.8: more of their products
// on the int8 path). A grouped launch (the output projection's G groups) counts the rows
// of all its groups: it is one grid.
inline constexpr uint32_t kMmaMinTokens = 16;
inline constexpr uint64_t kMmaMinWork = 131072;
bool mma_applies(uint64_t rows, uint32_t n_tok, uint64_t min_work);
// Which tensor-core path quantize_mma_activations and matmul_q8r_mma take (one setting
// for both: the activations' layout depends on it). Not thread safe; set before passes.
enum class MmaPrecision { Int8, Half };
void set_mma_precision(MmaPrecision p);
MmaPrecision mma_precision();
// Sets the kernels' shared-memory limits once (matmul_q8r_mma calls it too); the forward
// calls it at load so that no such call lands inside a captured graph.
void mma_init();

// The activations for matmul_q8r_mma: n_tok rows of cols f32 values (x 16-byte aligned,
// x_stride a multiple of 4, cols a multiple of 256 up to 32768), tokens padded to a
// multiple of 64 (zeros), each token's values in the order q8r_repack gives a weight row
// of cols values. Int8: quantized per block of 32 as quantize_q8_activations does (d =
// amax/127, q = round-to-nearest-even(x / d)), the codes, then the f32 scales by (block
// in q8r scale order, token). Half: f16(x · 2^e) per value (2 bytes), then 2^−e per
// token (f32). xq: mma_activation_bytes(cols, n_tok) bytes (either layout), 16-byte aligned.
uint64_t mma_activation_bytes(uint64_t cols, uint32_t n_tok);
uint64_t mma_padded_tokens(uint32_t n_tok);  // the tokens that layout holds (n_tok rounded up to 64)
void quantize_mma_activations(const float* x, uint64_t x_stride, uint64_t cols, uint32_t n_tok, void* xq,
                              cudaStream_t s);

// Optional parts of matmul_q8r_mma.
//  - groups: several products of one shape in one launch (the grouped low-rank output
//    projection): product g has weights w + g · w_group (bytes), activations the columns
//    [g · cols, (g + 1) · cols) of XQ quantized over xq_cols >= groups · cols columns (one
//    quantize_mma_activations over the whole row: the 32-blocks quantize alone, so the
//    codes are those of each slice quantized by itself), output y + g · y_group.
//  - scratch: kMmaSplitScratchFloats floats (16-byte aligned) that let small grids (batches
//    of 16-128 tokens) split each row into its chunks across blocks (split-K) and add the
//    chunk sums in a second kernel; null: never split. The result's bits are the same
//    either way (fixed chunks of a row, by cols only, added in order), so the choice, made
//    by grid size, never changes a token's bits; $DS4_CUDA_MMA_SPLIT=0 turns it off.
inline constexpr uint64_t kMmaSplitScratchFloats = uint64_t{8} * 160 * 128 * 32;
// The token tile of a split launch of more than 32 tokens: 64 (one tile reads and
// converts the weights once; H200, 43 layers, 64 sequences: 1088-1097 t/s against
// 1066-1072 with 32) or 32; the bits are the same. Tuning: the forward sets it at open
// from $DS4_CUDA_MMA_SPLIT_BN.
inline constexpr uint32_t kMmaSplitTileTokens = 64;
void set_mma_split_tile_tokens(uint32_t bn);
// Split when the grid of 32-token tiles has at most this many blocks (0: the default,
// 160; a split that outgrows the scratch never happens). Tuning: the forward sets it at
// open from $DS4_CUDA_MMA_SPLIT_MAX. The bits are the same either way.
void set_mma_split_max_blocks(uint32_t blocks);
struct MmaExtra {
    float* scratch = nullptr;
    uint64_t scratch_floats = kMmaSplitScratchFloats;
    uint32_t groups = 1;
    uint64_t w_group = 0, y_group = 0, xq_cols = 0;  // xq_cols 0: cols
};

// Y[t][r] = W[r] · dequant(XQ[t]) for r < rows, t < n_tok: W repacked Q8_0 rows
// (q8r_repack, kernels.h; 16-byte aligned, cols a multiple of 256 up to 32768), XQ from
// quantize_mma_activations over the same cols and n_tok. A (row, token) result does not
// depend on the other tokens, on n_tok or on the split (per row: fixed chunks of up to
// 8 x 1024 columns, each a fixed per-block fmaf chain from zero, added in order).
void matmul_q8r_mma(const void* w, uint64_t rows, uint64_t cols, const void* xq, uint32_t n_tok, float* y,
                    uint64_t y_stride, cudaStream_t s, const MmaExtra& ex = {});

}  // namespace ds4::cuda
