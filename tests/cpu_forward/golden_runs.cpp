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

std::vector<float> run_in_chunks(const LoadedGolden& lg, const std::vector<uint32_t>& sizes, ThreadPool* pool,
                                 CpuForward::BlockObserver observer) {
    const Golden& g = *lg.golden;
    const uint32_t V = g.hp.n_vocab;
    KvState state(g.hp, g.T);
    CpuForward fwd(*lg.model, pool);
    fwd.set_block_observer(std::move(observer));
    std::vector<float> logits(uint64_t{g.T} * V);
    std::vector<uint32_t> rows;
    uint32_t pos = 0;
    for (size_t i = 0; pos < g.T; ++i) {
        const uint32_t n = std::min(sizes[std::min(i, sizes.size() - 1)], g.T - pos);
        rows.resize(n);
        std::iota(rows.begin(), rows.end(), 0u);
        fwd.eval(state, pos, {g.tokens.data() + pos, n}, rows, {logits.data() + uint64_t{pos} * V, uint64_t{n} * V});
        pos += n;
    }
    return logits;
}

}  // namespace ds4::cpu::test
