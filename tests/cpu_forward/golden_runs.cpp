#include "golden_runs.h"

#include <algorithm>
#include <map>
#include <numeric>

namespace ds4::cpu::test {

const LoadedGolden& loaded_golden(const std::string& name) {
    static std::map<std::string, LoadedGolden> cache;
    auto it = cache.find(name);
    if (it == cache.end()) {
        LoadedGolden lg;
        lg.golden = Golden::load(std::string(DS4_TEST_DATA_DIR) + "/golden/golden_" + name + ".safetensors", name);
        lg.model = std::make_unique<CpuModel>(lg.golden->hp, lg.golden->weights);
        it = cache.emplace(name, std::move(lg)).first;
    }
    return it->second;
}

std::vector<uint32_t> cyclic_schedule(const std::vector<uint32_t>& sizes, uint32_t T) {
    std::vector<uint32_t> out;
    for (uint32_t done = 0, i = 0; done < T; ++i) {
        out.push_back(sizes[i % sizes.size()]);
        done += out.back();
    }
    return out;
}

std::vector<float> run_in_chunks(const LoadedGolden& lg, const std::vector<uint32_t>& sizes,
                                 const RunOptions& options) {
    const Golden& g = *lg.golden;
    const uint32_t V = g.hp.n_vocab;
    const uint32_t T = options.n_tokens != 0 ? std::min(options.n_tokens, g.T) : g.T;
    std::unique_ptr<KvState> own;
    if (options.state == nullptr) own = std::make_unique<KvState>(g.hp, T);
    KvState& state = options.state ? *options.state : *own;
    CpuForward fwd(*lg.model, options.pool);
    fwd.set_block_observer(options.observer);
    std::vector<float> logits(uint64_t{T} * V);
    std::vector<uint32_t> rows;
    uint32_t pos = 0;
    for (size_t i = 0; pos < T; ++i) {
        const uint32_t n = std::min(sizes[std::min(i, sizes.size() - 1)], T - pos);
        rows.resize(n);
        std::iota(rows.begin(), rows.end(), 0u);
        fwd.eval(state, pos, {g.tokens.data() + pos, n}, rows, {logits.data() + uint64_t{pos} * V, uint64_t{n} * V});
        pos += n;
    }
    return logits;
}

}  // namespace ds4::cpu::test
