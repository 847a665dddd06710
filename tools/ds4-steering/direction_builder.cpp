#include "direction_builder.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>

#include "cpu/matvec.h"
#include "cpu/quant_matvec.h"
#include "ds4/error.h"

namespace ds4::steering {

namespace {

// Sum in double: the means of a few hundred activations of magnitude ~10 lose nothing.
std::vector<double> mean_of(std::span<const std::vector<float>> tables, uint64_t size) {
    std::vector<double> m(size, 0.0);
    for (const auto& t : tables)
        for (uint64_t i = 0; i < size; ++i) m[i] += t[i];
    for (double& v : m) v /= static_cast<double>(tables.size());
    return m;
}

void normalize(std::span<double> v) {
    double n2 = 0;
    for (double x : v) n2 += x * x;
    if (n2 == 0) return;
    const double inv = 1.0 / std::sqrt(n2);
    for (double& x : v) x *= inv;
}

void check_tables(std::span<const std::vector<float>> tables, uint64_t size, const char* which) {
    if (tables.empty()) fail("steering builder: no ", which, " activations");
    for (size_t i = 0; i < tables.size(); ++i)
        if (tables[i].size() != size)
            fail("steering builder: ", which, " activation table ", i, " has ", tables[i].size(), " values, expected ",
                 size);
}

}  // namespace

std::vector<float> last_token_activations(const cpu::CpuModel& model, std::span<const int32_t> tokens,
                                          cpu::SteeringSite site, cpu::ThreadPool* pool) {
    const model::Hparams& hp = model.hparams();
    if (tokens.empty()) fail("steering builder: empty prompt");
    const cpu::NumericsScope numerics(cpu::default_numerics(model.weights()));
    const uint64_t dim = hp.n_embd;
    const auto n = static_cast<uint32_t>(tokens.size());
    std::vector<float> out(uint64_t{hp.n_layer} * dim);
    cpu::Steering probe_only;  // no directions: the outputs are observed, not changed
    probe_only.set_probe([&](uint32_t il, cpu::SteeringSite s, std::span<const float> before, std::span<const float>) {
        if (s != site) return;
        const auto last = before.subspan((n - 1) * dim, dim);
        std::copy(last.begin(), last.end(), out.begin() + static_cast<std::ptrdiff_t>(il * dim));
    });
    cpu::CpuForward fwd(model, pool);
    fwd.set_steering(std::move(probe_only));
    cpu::KvState state(hp, n);
    fwd.eval(state, 0, tokens, {}, {});
    return out;
}

std::vector<float> build_directions(std::span<const std::vector<float>> good, std::span<const std::vector<float>> bad,
                                    uint32_t n_layer, uint32_t n_embd, const DirectionOptions& options) {
    const uint64_t size = uint64_t{n_layer} * n_embd;
    check_tables(good, size, "good");
    check_tables(bad, size, "bad");
    if (options.pair_normalize && good.size() != bad.size())
        fail("steering builder: --pair-normalize needs as many good as bad prompts (", good.size(), " vs ",
             bad.size(), ")");
    const std::vector<double> mean_bad = mean_of(bad, size);
    std::vector<double> dir(size, 0.0);
    if (options.pair_normalize) {
        std::vector<double> diff(n_embd);
        for (size_t p = 0; p < good.size(); ++p)
            for (uint32_t il = 0; il < n_layer; ++il) {
                const uint64_t off = uint64_t{il} * n_embd;
                for (uint32_t i = 0; i < n_embd; ++i) diff[i] = double{good[p][off + i]} - bad[p][off + i];
                normalize(diff);
                for (uint32_t i = 0; i < n_embd; ++i) dir[off + i] += diff[i] / static_cast<double>(good.size());
            }
    } else {
        const std::vector<double> mean_good = mean_of(good, size);
        for (uint64_t i = 0; i < size; ++i) dir[i] = mean_good[i] - mean_bad[i];
    }
    std::vector<float> out(size);
    std::vector<double> b(n_embd);
    for (uint32_t il = 0; il < n_layer; ++il) {
        const std::span<double> d(dir.data() + uint64_t{il} * n_embd, n_embd);
        normalize(d);
        if (options.orthogonalize) {
            std::copy_n(mean_bad.begin() + static_cast<std::ptrdiff_t>(uint64_t{il} * n_embd), n_embd, b.begin());
            normalize(b);
            const double along = std::inner_product(d.begin(), d.end(), b.begin(), 0.0);
            for (uint32_t i = 0; i < n_embd; ++i) d[i] -= along * b[i];
            normalize(d);
        }
        for (uint32_t i = 0; i < n_embd; ++i) out[uint64_t{il} * n_embd + i] = static_cast<float>(d[i]);
    }
    return out;
}

void normalize_rows(std::span<float> values, uint32_t n) {
    if (n == 0 || values.size() % n != 0) fail("steering: ", values.size(), " values are not rows of ", n);
    std::vector<double> row(n);
    for (uint64_t off = 0; off < values.size(); off += n) {
        for (uint32_t i = 0; i < n; ++i) row[i] = values[off + i];
        normalize(row);
        for (uint32_t i = 0; i < n; ++i) values[off + i] = static_cast<float>(row[i]);
    }
}

std::string sidecar_json(uint32_t n_layer, uint32_t n_embd, cpu::SteeringSite site, bool thinking,
                         const DirectionOptions& options, const std::string& good_file, const std::string& bad_file,
                         const std::string& model_path) {
    const nlohmann::ordered_json j = {
        {"format", "ds4-directional-steering-v1"},
        {"shape", {n_layer, n_embd}},
        {"component", site == cpu::SteeringSite::ffn ? "ffn_out" : "attn_out"},
        {"thinking", thinking},
        {"pair_normalize", options.pair_normalize},
        {"orthogonalize_control_mean", options.orthogonalize},
        {"good_file", good_file},
        {"bad_file", bad_file},
        {"model", model_path},
        {"note", "direction = normalize(mean_good - mean_bad) of the last prompt token's sublayer output; "
                 "apply with --dir-steering-file (positive scale removes it)"},
    };
    return j.dump(2) + "\n";
}

}  // namespace ds4::steering
