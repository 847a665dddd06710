// The multi-token-prediction (MTP) block on CPU (spec model.md §10.1, the official
// MTPBlock): for each slot s at position pos + s,
//
//   X[s][k] = e_proj · RMSNorm_enorm(embed[ids[s]]) + h_proj · RMSNorm_hnorm(hc[s][k])
//   X       = one ordinary block (mtp.0.* weights, ratio 0: raw window only, RoPE base
//             rope_theta without YaRN, biased top-k routing, its own window cache)
//   logits  = output · RMSNorm_{mtp.0.norm}(hc-head collapse of X with mtp.0.hc_head_*)
//
// `hc[s]` is the main model's final 4-stream HC state (output of the last block, before
// the head's collapse: CpuForward::final_hc) and `embed`/`output` are the main model's
// token_embd / output. With the DeepSeek-V3 pairing the goldens use, hc[s] is the state at
// position i, ids[s] = t_{i+1}, the block runs at position i and predicts t_{i+2}.
//
// The block is bound as a one-layer model (mtp_hparams: n_layer 1, ratio 0, no hash
// layer) so the ordinary block code of CpuForward runs it unchanged: the mtp.0.* block
// tensors are presented to ModelWeights::bind as "blk.0.*" and the MTP head as the
// "output_hc_*" / "output_norm" globals. Its cache is a KvState of mtp_hparams().
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "cpu/forward.h"
#include "cpu/kv_state.h"
#include "cpu/weight_set.h"
#include "model/hparams.h"

namespace ds4::cpu {

// The MTP block's shape: the main shape as one ratio-0, non-hash layer.
model::Hparams mtp_hparams(const model::Hparams& main);

class MtpModel {
  public:
    // Binds token_embd.weight and output.weight from `shared` (the main model's weights)
    // and every mtp.0.* tensor of model.md §2.4 from `mtp` (a separate MTP GGUF's views,
    // or the same set when one file holds both), checking types and dims against `main`.
    // Both sets must outlive the model. Throws ds4::Error naming the tensor.
    MtpModel(const model::Hparams& main, const WeightSet& shared, const WeightSet& mtp);
    MtpModel(const model::Hparams& main, const WeightSet& ws) : MtpModel(main, ws, ws) {}

    const model::Hparams& hparams() const { return block_->hparams(); }  // mtp_hparams(main)
    const CpuModel& block() const { return *block_; }

    // A fresh MTP window cache for sequences of up to ctx positions.
    KvState make_state(uint64_t ctx) const { return KvState(hparams(), ctx); }

    // The input projections' weights (for other backends: cuda/mtp.h uploads them).
    const TensorView& token_embd() const { return token_embd_; }
    const TensorView& e_proj() const { return e_proj_; }
    const TensorView& h_proj() const { return h_proj_; }
    std::span<const float> enorm() const { return enorm_; }
    std::span<const float> hnorm() const { return hnorm_; }

  private:
    friend class MtpForward;
    WeightSet renamed_;  // views of ws under the one-layer model's names
    std::unique_ptr<CpuModel> block_;
    TensorView token_embd_, e_proj_, h_proj_;
    std::vector<float> enorm_, hnorm_;
};

class MtpForward {
  public:
    explicit MtpForward(const MtpModel& model, ThreadPool* pool = nullptr);

    // Runs the block over n = ids.size() slots at positions [pos, pos + n) (pos must equal
    // state.n_tokens()); hc holds n main-model HC states (n × hc_dim). For each entry i of
    // logit_rows writes the draft logits of slot logit_rows[i] to logits[i·vocab ..].
    // Advances the state by n.
    void eval(KvState& state, uint64_t pos, std::span<const int32_t> ids, std::span<const float> hc,
              std::span<const uint32_t> logit_rows, std::span<float> logits);

    // The block's output HC state of slot t of the last eval (for recursive drafting).
    std::span<const float> final_hc(uint32_t t) const { return block_.final_hc(t); }

  private:
    void project_inputs(std::span<const int32_t> ids, std::span<const float> hc);

    const MtpModel& model_;
    ThreadPool* pool_;
    CpuForward block_;
    // scratch: e (n × dim), e_proj·e, hnorm(hc), h_proj·hnorm(hc), X (n × hc_dim each)
    std::vector<float> e_, eproj_, hn_, hproj_, x_;
};

}  // namespace ds4::cpu
