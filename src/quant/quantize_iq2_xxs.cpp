// Scalar reference IQ2_XXS quantizer (formats.md §4.4), bit-compatible with ggml's
// quantize_row_iq2_xxs_impl. Each 8-value sub-group is coded as |x| ≈ s·q with q one of
// 256 grid points (levels {1,3,5}) plus 7 sign bits (the 8th is even parity); a
// 32-value group has one 4-bit scale, the block one f16 super-scale.
//
// The search rounds |x|/s onto levels {0,1,2} per value; the resulting 16-bit code is
// usually not one of the 256 grid points, so a one-time index maps every code either to
// its grid index or to a short list of nearby grid points to choose from.
//
// ggml requires importance weights for this type. A null `w` here means importance x²
// (ds4's fallback without an imatrix is the per-column Σ_rows x², formats.md §4.3,
// which is x² for a single row; matrix-wide callers should pass that column sum).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <vector>

#include "quant/iq2_tables.h"
#include "quant/reference.h"
#include "quant/reference_fit.h"
#include "quant/scalars.h"

// Bit-compatibility with ggml needs every a*b+c rounded twice, as written: forbid FMA
// contraction even if the build adds -mfma / -march=native.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace ds4::quant::ref {

namespace {

using detail::nearest_int;

constexpr int kCodeSpace = 43692;  // 16-bit codes of 8 fields in 0..2 are all < 0xAAAC
constexpr int kMaxLevel = 2;       // field values 0..2 ↔ levels 1, 3, 5

// Grid level (2·field + 1) of value i of grid entry k.
inline int grid_level(int k, int i) {
    return 2 * ((kIq2GridCodes[k] >> (2 * i)) & 3) + 1;
}

// Neighbour lists are stored in chunks of kLanes entries with their levels transposed
// (level i of the chunk's 8 entries contiguous), so the distance loop below evaluates
// kLanes candidates side by side. Each candidate's distance is still summed over
// i = 0..7 in order, so the result is bit-identical to a one-at-a-time loop; it is just
// no longer one long dependency chain (this loop is most of IQ2_XXS's run time).
constexpr int kLanes = 8;

struct NeighbourChunk {
    float level[8][kLanes];  // level[i][lane]: level i of candidate `lane`
    uint8_t grid[kLanes];    // grid index of each candidate
};

struct Iq2Index {
    // code → grid index (>= 0), or -(1 + list number) for off-grid codes
    std::vector<int32_t> code_to_grid;
    // list t: chunks[first_chunk[t] .. first_chunk[t+1]), its first size[t] lanes real
    std::vector<uint32_t> first_chunk;
    std::vector<uint16_t> size;
    std::vector<NeighbourChunk> chunks;
    std::array<std::array<int8_t, 8>, 256> levels{};  // grid_level, precomputed
};

// Every grid entry within the two nearest squared-distance shells of `code`'s levels,
// ordered by (distance, index) — ggml's neighbour list for IQ2_XXS (nwant = 2).
std::vector<uint8_t> neighbours_of(int code, const Iq2Index& idx) {
    std::array<int, 256> dist{};
    int shell1 = std::numeric_limits<int>::max();
    int shell2 = std::numeric_limits<int>::max();
    for (int k = 0; k < 256; ++k) {
        int d2 = 0;
        for (int i = 0; i < 8; ++i) {
            const int diff = idx.levels[k][i] - (2 * ((code >> (2 * i)) & 3) + 1);
            d2 += diff * diff;
        }
        dist[k] = d2;
        if (d2 < shell1) {
            shell2 = shell1;
            shell1 = d2;
        } else if (d2 > shell1 && d2 < shell2) {
            shell2 = d2;
        }
    }
    std::vector<uint8_t> out;
    for (int shell : {shell1, shell2}) {
        for (int k = 0; k < 256; ++k) {
            if (dist[k] == shell) out.push_back(static_cast<uint8_t>(k));
        }
    }
    return out;
}

void append_list(const std::vector<uint8_t>& list, Iq2Index& idx) {
    for (size_t c = 0; c < list.size(); c += kLanes) {
        NeighbourChunk chunk{};
        for (int lane = 0; lane < kLanes; ++lane) {
            // padding lanes repeat the list's first entry; they are never selected
            const uint8_t k = c + lane < list.size() ? list[c + lane] : list[0];
            chunk.grid[lane] = k;
            for (int i = 0; i < 8; ++i) chunk.level[i][lane] = static_cast<float>(idx.levels[k][i]);
        }
        idx.chunks.push_back(chunk);
    }
    idx.size.push_back(static_cast<uint16_t>(list.size()));
    idx.first_chunk.push_back(static_cast<uint32_t>(idx.chunks.size()));
}

Iq2Index build_index() {
    Iq2Index idx;
    for (int k = 0; k < 256; ++k) {
        for (int i = 0; i < 8; ++i) idx.levels[k][i] = static_cast<int8_t>(grid_level(k, i));
    }
    idx.code_to_grid.assign(kCodeSpace, 0);
    std::vector<bool> on_grid(kCodeSpace, false);
    for (int k = 0; k < 256; ++k) {
        idx.code_to_grid[kIq2GridCodes[k]] = k;
        on_grid[kIq2GridCodes[k]] = true;
    }
    idx.first_chunk.push_back(0);
    for (int code = 0; code < kCodeSpace; ++code) {
        if (on_grid[code]) continue;
        bool has_field_3 = false;  // unreachable: the search clamps fields to 0..2
        for (int i = 0; i < 8; ++i) has_field_3 |= ((code >> (2 * i)) & 3) == 3;
        if (has_field_3) continue;
        idx.code_to_grid[code] = -static_cast<int32_t>(idx.size.size()) - 1;
        append_list(neighbours_of(code, idx), idx);
    }
    return idx;
}

const Iq2Index& iq2_index() {
    static std::once_flag once;
    static Iq2Index idx;
    std::call_once(once, [] { idx = build_index(); });
    return idx;
}

// Fields 0..2 of an 8-value sub-group, from values xa and inverse scale id.
uint16_t round_to_fields(const float* xa, float id, int8_t* fields) {
    uint16_t code = 0;
    for (int i = 0; i < 8; ++i) {
        const int l = std::clamp(nearest_int(0.5f * (id * xa[i] - 1)), 0, kMaxLevel);
        fields[i] = static_cast<int8_t>(l);
        code = static_cast<uint16_t>(code | (l << (2 * i)));
    }
    return code;
}

// Snaps an off-grid code to the neighbour minimising Σ wa·(scale·level − xa)²
// (first minimum in list order wins); writes its fields and returns its grid index.
int best_neighbour(const Iq2Index& idx, int32_t entry, const float* xa, const float* wa,
                   float scale, int8_t* fields) {
    const int list = -entry - 1;
    int remaining = idx.size[list];
    float best_d2 = HUGE_VALF;
    int best = -1;
    for (uint32_t c = idx.first_chunk[list]; c < idx.first_chunk[list + 1]; ++c) {
        const NeighbourChunk& chunk = idx.chunks[c];
        float d2[kLanes] = {};
        for (int i = 0; i < 8; ++i) {
            for (int lane = 0; lane < kLanes; ++lane) {
                const float diff = scale * chunk.level[i][lane] - xa[i];
                d2[lane] += wa[i] * diff * diff;
            }
        }
        const int real = std::min(remaining, kLanes);
        for (int lane = 0; lane < real; ++lane) {
            if (d2[lane] < best_d2) {
                best_d2 = d2[lane];
                best = chunk.grid[lane];
            }
        }
        remaining -= real;
    }
    // every distance is finite for finite input; fall back to the first neighbour so a
    // NaN can never produce an invalid index
    if (best < 0) best = idx.chunks[idx.first_chunk[list]].grid[0];
    for (int i = 0; i < 8; ++i) fields[i] = static_cast<int8_t>((idx.levels[best][i] - 1) / 2);
    return best;
}

// Weighted Σ w·xa·q and Σ w·q² over a 32-value group with q = 2·field + 1.
void group_sums(const float* w, const float* xa, const int8_t* fields, float& sqx, float& sq2) {
    sqx = 0;
    sq2 = 0;
    for (int i = 0; i < 32; ++i) {
        const float q = static_cast<float>(2 * fields[i] + 1);
        sqx += w[i] * xa[i] * q;
        sq2 += w[i] * q * q;
    }
}

struct GroupCode {
    float scale = 0;     // 0: the group is written as all-zero bytes
    uint32_t grid = 0;   // A word: grid index of sub-group k in byte k
    uint32_t signs = 0;  // B word without the scale: 7 sign bits per sub-group
};

// Magnitudes and sign bits of one 32-value group. The sign pattern of each sub-group
// must have even parity; if it doesn't, the element whose flip costs least (smallest
// w·x²) is flipped — its magnitude becomes negative, i.e. it is coded with the wrong
// sign, which the fits below account for.
void split_signs(const float* xb, const float* w, float* xa, uint8_t* signs) {
    for (int k = 0; k < 4; ++k) {
        int nflip = 0;
        uint8_t s = 0;
        for (int i = 0; i < 8; ++i) {
            const float v = xb[8 * k + i];
            if (v >= 0) {
                xa[8 * k + i] = v;
            } else {
                xa[8 * k + i] = -v;
                ++nflip;
                s = static_cast<uint8_t>(s | (1 << i));
            }
        }
        if (nflip % 2 != 0) {
            int imin = 0;
            float min = w[8 * k] * xb[8 * k] * xb[8 * k];
            for (int i = 1; i < 8; ++i) {
                const float cost = w[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
                if (cost < min) {
                    min = cost;
                    imin = i;
                }
            }
            xa[8 * k + imin] = -xa[8 * k + imin];
            s = static_cast<uint8_t>(s ^ (1 << imin));
        }
        signs[k] = s & 127;
    }
}

// Rounds each 8-value sub-group of xa onto fields for inverse scale `id`; an off-grid
// result is replaced by its best neighbour at `scale` (= 1/id). Returns the grid indices.
std::array<uint32_t, 4> snap_to_grid(const Iq2Index& idx, const float* xa, const float* wa,
                                     float id, float scale, int8_t* fields) {
    std::array<uint32_t, 4> grid{};
    for (int k = 0; k < 4; ++k) {
        const uint16_t code = round_to_fields(xa + 8 * k, id, fields + 8 * k);
        const int32_t entry = idx.code_to_grid[code];
        grid[k] = static_cast<uint32_t>(
            entry >= 0 ? entry
                       : best_neighbour(idx, entry, xa + 8 * k, wa + 8 * k, scale, fields + 8 * k));
    }
    return grid;
}

GroupCode quantize_group(const Iq2Index& idx, const float* xb, const float* w) {
    float wa[32];
    for (int i = 0; i < 32; ++i) wa[i] = std::sqrt(w[i]);
    float xa[32];
    uint8_t signs[4];
    split_signs(xb, w, xa, signs);

    float max = xa[0];
    for (int i = 1; i < 32; ++i) max = max > xa[i] ? max : xa[i];
    if (max < 1e-15f) return {};

    // initial scale: plain fit on levels 0..4 (the odd levels 1,3,5 are ~ 2·field+1)
    int8_t L[32];
    float scale = detail::fit_positive_scale(32, 4, xa, w, reinterpret_cast<uint8_t*>(L));
    const float eff_max = scale * 3;
    if (!(eff_max > 0)) return {};  // e.g. all weights zero: written as an all-zero group

    // search 13 grid densities around 5/eff_max; each candidate snaps every sub-group
    // onto the grid and keeps the codes with the best fitted Σ(w·x·q)²/Σ(w·q²)
    int8_t Laux[32];
    float best = 0;
    for (int step = -6; step <= 6; ++step) {
        const float id = (5 + static_cast<float>(step) * 0.1f) / eff_max;
        snap_to_grid(idx, xa, wa, id, 1 / id, Laux);
        float sqx = 0;
        float sq2 = 0;
        group_sums(w, xa, Laux, sqx, sq2);
        if (sq2 > 0 && sqx * sqx > best * sq2) {
            scale = sqx / sq2;
            best = scale * sqx;
            std::memcpy(L, Laux, sizeof(L));
        }
    }

    std::array<uint32_t, 4> grid{};
    if (scale > 0) {
        // final pass with the chosen scale, then refit the scale to the final codes
        grid = snap_to_grid(idx, xa, wa, 1 / scale, scale, L);
        float sqx = 0;
        float sq2 = 0;
        group_sums(w, xa, L, sqx, sq2);
        if (sq2 > 0) scale = sqx / sq2;
    } else {
        // a negative best fit: the candidate codes are grid points already
        for (int k = 0; k < 4; ++k) {
            uint16_t code = 0;
            for (int i = 0; i < 8; ++i)
                code = static_cast<uint16_t>(code | ((L[8 * k + i] & 3) << (2 * i)));
            grid[k] = static_cast<uint32_t>(std::max(idx.code_to_grid[code], 0));
        }
    }
    if (scale < 0) {
        // cannot happen for sane input; the scale field is unsigned, so flip all signs
        scale = -scale;
        for (auto& s : signs) s = static_cast<uint8_t>(~s & 127);
    }
    if (!(scale >= 0) || !std::isfinite(scale)) return {};
    GroupCode out;
    for (int k = 0; k < 4; ++k) {
        out.grid |= grid[k] << (8 * k);
        out.signs |= static_cast<uint32_t>(signs[k]) << (7 * k);
    }
    out.scale = scale;
    return out;
}

void quantize_block(const Iq2Index& idx, const float* x, const float* qw, BlockIQ2XXS& y) {
    float sumx2 = 0;
    for (int i = 0; i < QK_K; ++i) sumx2 += x[i] * x[i];
    const float sigma2 = sumx2 / QK_K;

    GroupCode groups[QK_K / 32];
    float max_scale = 0;
    float weight[32];
    for (int g = 0; g < QK_K / 32; ++g) {
        const float* xb = x + 32 * g;
        for (int i = 0; i < 32; ++i) {
            const float importance = qw != nullptr ? qw[32 * g + i] : xb[i] * xb[i];
            weight[i] = importance * std::sqrt(sigma2 + xb[i] * xb[i]);
        }
        groups[g] = quantize_group(idx, xb, weight);
        max_scale = std::max(max_scale, groups[g].scale);
    }
    std::memset(&y, 0, sizeof(y));
    if (max_scale == 0) return;  // all-zero block: d = 0 and every byte 0

    const float d = max_scale / 31;
    y.d = f32_to_f16(d);
    const float id = 1 / d;
    for (int g = 0; g < QK_K / 32; ++g) {
        // the decoder computes d·(2·ls+1)/8 · GRID ≈ d·(2·ls+1) · level, and the search
        // modelled |x| ≈ scale_g · level, so ls = (scale_g/d − 1)/2; d = max/31 ↔ ls = 15
        const int ls = std::clamp(nearest_int(0.5f * (id * groups[g].scale - 1)), 0, 15);
        const uint32_t words[2] = {groups[g].grid, groups[g].signs | static_cast<uint32_t>(ls)
                                                                         << 28};
        std::memcpy(&y.qs[4 * g], words, sizeof(words));
    }
}

}  // namespace

void quantize_iq2_xxs(const float* x, BlockIQ2XXS* y, int64_t n, const float* w) {
    const Iq2Index& idx = iq2_index();
    for (int64_t b = 0; b < n / QK_K; ++b) {
        quantize_block(idx, x + b * QK_K, w != nullptr ? w + b * QK_K : nullptr, y[b]);
    }
}

}  // namespace ds4::quant::ref
