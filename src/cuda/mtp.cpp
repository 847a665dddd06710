// MTP block on the GPU (see mtp.h): input projections here, the block by cuda::Forward.
#include "cuda/mtp.h"

#include <vector>

#include "cpu/matvec.h"
#include "cuda/device.h"
#include "cuda/forward.h"
#include "cuda/forward_kernels.h"
#include "cuda/kernels.h"
#include "cuda/mtp_kernels.h"
#include "ds4/error.h"

namespace ds4::cuda {

namespace {

// A projection matrix in VRAM (dims[1] rows of dims[0] values, GGUF layout).
struct DeviceMatrix {
    cpu::TensorView view;
    DeviceBuffer<uint8_t> data;

    explicit DeviceMatrix(const cpu::TensorView& v) : view(v), data(v.row_bytes() * v.dims[1]) {
        DS4_CUDA_CHECK(cudaMemcpy(data.data(), v.data, data.bytes(), cudaMemcpyHostToDevice));
    }

    // Y[t] = W · X[t] for n rows of contiguous input (stride dims[0]) and output (dims[1]);
    // the register-dequant kernel where it applies, as cuda::Forward's products do.
    void apply(const float* x, float* y, uint32_t n, cudaStream_t s) const {
        const uint64_t rows = view.dims[1], cols = view.dims[0];
        if (matmul_supported(view.type) && cols % 256 == 0)
            matmul(view.type, data.data(), rows, cols, x, cols, y, rows, n, s);
        else if (matmul_any_supported(view.type))
            matmul_any(view.type, data.data(), view.row_bytes(), rows, cols, x, cols, y, rows, n,
                       s);
        else
            fail("cuda MTP block: no GPU product for a ", ggml_type_name(view.type),
                 " projection of ", cols, " columns");
    }
};

}  // namespace

struct MtpForward::Impl {
    const cpu::MtpModel& model;
    const model::Hparams& hp;
    Forward block;
    Stream stream;
    DeviceMatrix e_proj, h_proj;
    DeviceBuffer<float> enorm, hnorm;
    // scratch for up to `cap` slots: e (n × dim), hc input, e_proj·e, h_proj·hnorm(hc), X
    uint32_t cap = 0;
    DeviceBuffer<float> e, hc_in, hn, eproj, hproj, x;
    std::vector<float> host_e;

    explicit Impl(const cpu::MtpModel& m)
        : model(m),
          hp(m.hparams()),
          block(m.block()),
          e_proj(m.e_proj()),
          h_proj(m.h_proj()),
          enorm(to_device(m.enorm())),
          hnorm(to_device(m.hnorm())) {}

    void reserve(uint32_t n) {
        if (n <= cap) return;
        cap = n;
        const uint64_t dim = hp.n_embd, hcd = hp.hc_dim();
        e = DeviceBuffer<float>(n * dim);
        eproj = DeviceBuffer<float>(n * dim);
        hc_in = DeviceBuffer<float>(n * hcd);
        hn = DeviceBuffer<float>(n * hcd);
        hproj = DeviceBuffer<float>(n * hcd);
        x = DeviceBuffer<float>(n * hcd);
    }

    // X of every slot into x (cpu::MtpForward::project_inputs, the same order of operations).
    void project_inputs(std::span<const int32_t> ids, std::span<const float> hc) {
        const auto n = static_cast<uint32_t>(ids.size());
        const uint32_t dim = hp.n_embd, H = hp.hc_mult;
        const cudaStream_t s = stream.get();
        reserve(n);
        host_e.resize(uint64_t{n} * dim);
        for (uint32_t i = 0; i < n; ++i) {
            if (ids[i] < 0 || static_cast<uint32_t>(ids[i]) >= hp.n_vocab)
                fail("MTP block: token id ", ids[i], " is outside the vocabulary of ", hp.n_vocab);
            cpu::dequant_row(model.token_embd(), static_cast<uint64_t>(ids[i]),
                             host_e.data() + uint64_t{i} * dim);
        }
        DS4_CUDA_CHECK(cudaMemcpyAsync(e.data(), host_e.data(), host_e.size() * sizeof(float),
                                       cudaMemcpyHostToDevice, s));
        DS4_CUDA_CHECK(
            cudaMemcpyAsync(hc_in.data(), hc.data(), hc.size_bytes(), cudaMemcpyHostToDevice, s));
        rms_norm(e.data(), enorm.data(), e.data(), dim, n, hp.norm_eps, s);
        rms_norm(hc_in.data(), hnorm.data(), hn.data(), dim, n * H, hp.norm_eps, s);
        e_proj.apply(e.data(), eproj.data(), n, s);
        // every stream of every slot is one row of the h_proj product
        h_proj.apply(hn.data(), hproj.data(), n * H, s);
        mtp_combine(eproj.data(), hproj.data(), x.data(), n, H, dim, s);
        stream.sync();  // the block runs on its own stream
    }
};

MtpForward::MtpForward(const cpu::MtpModel& model) : impl_(std::make_unique<Impl>(model)) {}
MtpForward::~MtpForward() = default;

void MtpForward::eval(cpu::KvState& state, uint64_t pos, std::span<const int32_t> ids,
                      std::span<const float> hc, std::span<const uint32_t> logit_rows,
                      std::span<float> logits) {
    Impl& m = *impl_;
    const uint64_t hcd = m.hp.hc_dim();
    if (ids.empty()) fail("MTP block: empty chunk");
    if (hc.size() != ids.size() * hcd)
        fail("MTP block: ", hc.size(), " HC values for ", ids.size(), " slots, expected ",
             ids.size() * hcd);
    if (pos != state.n_tokens())
        fail("MTP block: chunk starts at position ", pos, " but the MTP cache holds ",
             state.n_tokens(), " positions");
    m.project_inputs(ids, hc);
    m.block.eval_from_hc(state, pos, ids, m.x.data(), logit_rows, logits);
}

std::span<const float> MtpForward::final_hc(uint32_t t) {
    return impl_->block.final_hc(t);
}
void MtpForward::download(cpu::KvState& state) {
    impl_->block.download(state);
}
void MtpForward::invalidate(const cpu::KvState& state) {
    impl_->block.invalidate(state, false);
}

}  // namespace ds4::cuda
