// The MTP block on the GPU (issue 11; the math is cpu/mtp.h's, model.md §10.1): for slot s
//
//   X[s][k] = e_proj · RMSNorm_enorm(embed[ids[s]]) + h_proj · RMSNorm_hnorm(hc[s][k])
//
// computed on the device (RMSNorm, the two projections and the broadcast add), then the
// one-layer block model of cpu::MtpModel::block() run by a second cuda::Forward from that
// input (Forward::eval_from_hc): the ordinary CUDA block code, its own window cache kept
// in VRAM keyed by the host cpu::KvState (cpu::MtpModel::make_state), the MTP head as the
// block model's output head. Same contract as cpu::MtpForward, so the engine swaps one for
// the other.
//
// Cache ownership is cuda::Forward's: after eval() the device copy is authoritative;
// download() before the host KvState is read or rewound, invalidate() after it changed.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "cpu/kv_state.h"
#include "cpu/mtp.h"

namespace ds4::cuda {

class MtpForward {
  public:
    // Uploads the block (the main model's output head included: the block model's copy)
    // and the input projections; `model` must outlive this. Throws ds4::Error without a GPU.
    explicit MtpForward(const cpu::MtpModel& model);
    ~MtpForward();
    MtpForward(const MtpForward&) = delete;
    MtpForward& operator=(const MtpForward&) = delete;

    // cpu::MtpForward::eval's contract: n = ids.size() slots at positions [pos, pos + n)
    // (pos == state.n_tokens()), hc n × hc_dim host values, logits of the slots in
    // logit_rows. Advances the state by n.
    void eval(cpu::KvState& state, uint64_t pos, std::span<const int32_t> ids,
              std::span<const float> hc, std::span<const uint32_t> logit_rows,
              std::span<float> logits);

    // The block's output HC state of slot t of the last eval (for chained drafts).
    std::span<const float> final_hc(uint32_t t);

    void download(cpu::KvState& state);
    void invalidate(const cpu::KvState& state);

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace ds4::cuda
