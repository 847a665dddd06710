// How the matvec launchers split a batch of tokens: chunks of 8, then 4, then the 1-3
// left, so every kernel instance is compiled for, and reads, exactly its own number of
// activation rows. Shared by matmul.cu and matmul_q8r.cu so both split a batch alike.
#pragma once

#include <cstdint>
#include <type_traits>

namespace ds4::cuda {

// Calls launch(t0, std::integral_constant<int, NT>{}) for each chunk [t0, t0 + NT).
template <class Launch>
void for_token_chunks(uint32_t n_tok, Launch&& launch) {
    for (uint32_t t0 = 0; t0 < n_tok;) {
        const uint32_t left = n_tok - t0;
        const uint32_t nt = left >= 8 ? 8 : left >= 4 ? 4 : left;
        switch (nt) {
            case 1: launch(t0, std::integral_constant<int, 1>{}); break;
            case 2: launch(t0, std::integral_constant<int, 2>{}); break;
            case 3: launch(t0, std::integral_constant<int, 3>{}); break;
            case 4: launch(t0, std::integral_constant<int, 4>{}); break;
            default: launch(t0, std::integral_constant<int, 8>{}); break;
        }
        t0 += nt;
    }
}

// The same chunks as runs: launch(t0, n_chunks, std::integral_constant<int, NT>{}) for
// n_chunks consecutive chunks of NT tokens from t0 (all the 8s, then a 4, then the 1-3
// left), so a launcher can put a run's chunks in one grid (blockIdx.z): the weights are
// read by the chunks side by side instead of once per launch.
template <class Launch>
void for_token_runs(uint32_t n_tok, Launch&& launch) {
    constexpr uint32_t kMaxRun = 65535;  // a grid's z extent
    const uint32_t eights = n_tok / 8;
    for (uint32_t c = 0; c < eights; c += kMaxRun)
        launch(8 * c, eights - c < kMaxRun ? eights - c : kMaxRun, std::integral_constant<int, 8>{});
    for_token_chunks(n_tok - 8 * eights, [&](uint32_t t0, auto nt) { launch(8 * eights + t0, 1u, nt); });
}

}  // namespace ds4::cuda
