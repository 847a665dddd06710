#include "synthetic.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ds4/error.h"
#include "model/tensor_plan.h"
#include "runtime/memory_estimate.h"

namespace ds4::bench {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Headroom for what the estimate does not itemize (allocator slack, thread stacks, the
// tokenized prompt, page tables): a fixed amount plus 5 %.
uint64_t with_margin(uint64_t bytes) {
    return bytes + bytes / 20 + (512ull << 20);
}

std::string gib(uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f GiB", double(bytes) / kGiB);
    return buf;
}

// The per-layer share of the image, for the "use --layers" advice.
uint64_t layer_bytes(const synth::MakeOptions& opt) {
    if (opt.shape.n_layer < 2) {
        synth::MakeOptions two = opt;
        two.shape.n_layer = 2;
        two.shape.compress_ratios = synth::default_ratios(2);
        two.shape.n_hash_layer = std::min(opt.shape.n_hash_layer, 2u);
        return synthetic_image_bytes(two) - synthetic_image_bytes(opt);
    }
    synth::MakeOptions one = opt;
    one.shape.n_layer = opt.shape.n_layer - 1;
    one.shape.compress_ratios = synth::default_ratios(one.shape.n_layer);
    one.shape.n_hash_layer = std::min(opt.shape.n_hash_layer, one.shape.n_layer);
    return synthetic_image_bytes(opt) - synthetic_image_bytes(one);
}

}  // namespace

synth::MakeOptions synthetic_options(const std::string& quant, uint32_t layers, unsigned threads) {
    synth::MakeOptions opt;
    opt.shape = synth::shape_preset("published");
    opt.shape.n_layer = layers;
    opt.shape.compress_ratios = synth::default_ratios(layers);
    opt.shape.n_hash_layer = std::min(opt.shape.n_hash_layer, layers);
    opt.plan.mix = model::parse_quant_mix(quant);
    opt.fast_blocks = true;
    opt.threads = threads;
    opt.seed = 1;
    opt.progress = true;
    return opt;
}

uint64_t synthetic_image_bytes(const synth::MakeOptions& opt) {
    const model::TensorPlan plan(opt.shape, opt.plan);
    // Tensor payload, one alignment pad and a directory entry per tensor, and the
    // metadata: the byte vocabulary's token strings, types and merges stay well under
    // 64 bytes a token.
    return plan.total_bytes() + plan.size() * (64 + 256) + uint64_t{opt.shape.n_vocab} * 64 +
           (1ull << 20);
}

uint64_t available_memory_bytes() {
    std::ifstream in("/proc/meminfo");
    std::string line;
    while (std::getline(in, line)) {
        if (!line.starts_with("MemAvailable:")) continue;
        std::istringstream ss(line.substr(13));
        uint64_t kib = 0;
        ss >> kib;
        return kib * 1024;
    }
    return 0;
}

uint64_t run_memory_bytes(const synth::MakeOptions& opt, uint64_t ctx, uint32_t batch,
                          uint64_t prefill_chunk, uint64_t bw_bytes) {
    const MemoryEstimate m = runtime::estimate_memory(opt.shape, ctx);
    const uint64_t chunk = prefill_chunk != 0 ? std::min<uint64_t>(prefill_chunk, runtime::kPrefillChunk)
                                              : runtime::kPrefillChunk;
    return m.kv_per_sequence() * batch + m.scratch + m.scratch_per_chunk_token * chunk + bw_bytes;
}

void check_fits(const synth::MakeOptions& opt, uint64_t run_bytes, uint64_t available,
                uint64_t limit) {
    const uint64_t image = synthetic_image_bytes(opt);
    const uint64_t need = with_margin(image + run_bytes);
    if (available == 0 && limit == 0) return;  // no /proc/meminfo: nothing to check against
    const uint64_t have = limit == 0       ? available
                          : available == 0 ? limit
                                           : std::min(available, limit);
    if (need <= have) return;
    const uint64_t per_layer = layer_bytes(opt);
    const uint64_t fixed =
        image > per_layer * opt.shape.n_layer ? image - per_layer * opt.shape.n_layer : 0;
    const uint64_t room = have > with_margin(fixed + run_bytes)
                              ? (have - with_margin(fixed + run_bytes)) * 20 / 21 / per_layer
                              : 0;
    fail(cat(
        "--synthetic ", model::quant_mix_name(opt.plan.mix), " --layers ", opt.shape.n_layer,
        " needs about ", gib(need), " of memory (weights ", gib(image), ", about ", gib(per_layer),
        " a layer; KV, scratch and ceiling buffers ", gib(run_bytes), "; margin), but only ",
        gib(have), " is available (", have == limit ? "--mem-limit-mib" : "MemAvailable",
        "): ", room == 0 ? "not even one layer fits" : cat("use --layers ", room, " or fewer")));
}

InMemoryModel::InMemoryModel(const synth::MakeOptions& opt) {
    const auto t0 = std::chrono::steady_clock::now();
    fd_ = ::memfd_create("ds4-bench-synthetic.gguf", MFD_CLOEXEC);
    if (fd_ < 0) fail(cat("--synthetic: memfd_create failed: ", std::strerror(errno)));
    path_ = cat("/proc/self/fd/", fd_);

    // gguf::Writer writes "<out>.tmp" and renames it to <out> when complete. Pointing
    // "<out>.tmp" of a private temporary directory at the memfd makes every byte land in
    // memory; the rename only moves the link, and the directory goes right after.
    namespace fs = std::filesystem;
    std::string dir_template = (fs::temp_directory_path() / "ds4-bench-XXXXXX").string();
    if (::mkdtemp(dir_template.data()) == nullptr)
        fail(cat(dir_template, ": cannot create a temporary directory: ", std::strerror(errno)));
    const fs::path dir = dir_template, out = dir / "synthetic.gguf";
    try {
        fs::create_symlink(path_, fs::path(out.string() + ".tmp"));
        bytes_ = synth::make_model(out.string(), opt).file_bytes;
    } catch (...) {
        std::error_code ec;
        fs::remove_all(dir, ec);
        ::close(fd_);
        throw;
    }
    std::error_code ec;
    fs::remove_all(dir, ec);  // the links only; the memfd keeps the bytes
    // Guards the link trick against a writer that stops writing through "<out>.tmp".
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || uint64_t(st.st_size) != bytes_) {
        ::close(fd_);
        fail(cat("--synthetic: the generated GGUF did not land in memory (memfd holds ",
                 uint64_t(st.st_size), " of ", bytes_, " bytes)"));
    }
    seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

InMemoryModel::~InMemoryModel() {
    if (fd_ >= 0) ::close(fd_);
}

}  // namespace ds4::bench
