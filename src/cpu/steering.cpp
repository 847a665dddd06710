#include "cpu/steering.h"

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "ds4/error.h"

namespace ds4::cpu {

SteeringDirections::SteeringDirections(std::vector<float> values, uint32_t n_layer, uint32_t n_embd)
    : values_(std::move(values)), n_layer_(n_layer), n_embd_(n_embd) {
    if (n_layer == 0 || n_embd == 0) fail("steering: empty direction table (", n_layer, " x ", n_embd, ")");
    if (values_.size() != uint64_t{n_layer} * n_embd)
        fail("steering: ", values_.size(), " direction values, expected ", n_layer, " layers x ", n_embd);
}

SteeringDirections SteeringDirections::load(const std::string& path, uint32_t n_layer, uint32_t n_embd) {
    const uint64_t expected = uint64_t{n_layer} * n_embd * sizeof(float);
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(path, ec);
    if (ec) fail(path, ": cannot read the directional steering file: ", ec.message());
    // The size is the whole format check (no header): a file for another model shape, or a
    // truncated one, must not be silently reinterpreted.
    if (size != expected)
        fail(path, " has size ", size, " bytes, expected ", expected, " bytes (", n_layer, " layers x ", n_embd,
             " f32 directional steering values)");
    std::vector<float> values(uint64_t{n_layer} * n_embd);
    std::ifstream in(path, std::ios::binary);
    if (!in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(expected)))
        fail(path, ": cannot read ", expected, " bytes of directional steering values: ", std::strerror(errno));
    // Little-endian on disk, and every supported host (x86-64, aarch64) is little-endian.
    static_assert(std::endian::native == std::endian::little, "steering files are little-endian f32");
    return SteeringDirections(std::move(values), n_layer, n_embd);
}

std::span<const float> SteeringDirections::layer(uint32_t il) const {
    if (il >= n_layer_) fail("steering: layer ", il, " of ", n_layer_);
    return {values_.data() + uint64_t{il} * n_embd_, n_embd_};
}

SteeringScales resolve_steering_scales(bool have_file, std::optional<float> attn, std::optional<float> ffn) {
    const auto check = [&](const char* flag, std::optional<float> v) {
        if (!v) return;
        if (!std::isfinite(*v) || *v < -100.0f || *v > 100.0f)
            fail("steering: ", flag, " = ", *v, " is outside [-100, 100]");
        if (*v != 0.0f && !have_file)
            fail("steering: ", flag, " = ", *v, " needs a direction file (--dir-steering-file)");
    };
    check("--dir-steering-attn", attn);
    check("--dir-steering-ffn", ffn);
    SteeringScales s;
    s.attn = attn.value_or(0.0f);
    s.ffn = ffn.value_or(have_file && !attn ? 1.0f : 0.0f);
    return s;
}

void write_steering_file(const std::string& path, std::span<const float> values) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size_bytes()));
    out.close();
    if (!out) fail(path, ": cannot write the directional steering file");
}

void steer_rows(float* y, uint64_t rows, std::span<const float> d, float scale) {
    const uint64_t n = d.size();
    for (uint64_t r = 0; r < rows; ++r) {
        float* yr = y + r * n;
        float dot = 0.0f;
        for (uint64_t i = 0; i < n; ++i) dot += yr[i] * d[i];
        const float coeff = scale * dot;
        for (uint64_t i = 0; i < n; ++i) yr[i] -= coeff * d[i];
    }
}

Steering::Steering(std::shared_ptr<const SteeringDirections> dirs, float attn_scale, float ffn_scale)
    : dirs_(std::move(dirs)), attn_(attn_scale), ffn_(ffn_scale) {}

void Steering::apply(uint32_t il, SteeringSite site, float* y, uint32_t rows, uint64_t n_embd) {
    const bool on = enabled(site);
    if (on && (dirs_->n_embd() != n_embd || il >= dirs_->n_layer()))
        fail("steering: directions are ", dirs_->n_layer(), " x ", dirs_->n_embd(), ", the model needs layer ", il,
             " of width ", n_embd);
    if (!probe_) {
        if (on) steer_rows(y, rows, dirs_->layer(il), scale(site));
        return;
    }
    const uint64_t count = uint64_t{rows} * n_embd;
    before_.assign(y, y + count);
    if (on) steer_rows(y, rows, dirs_->layer(il), scale(site));
    probe_(il, site, before_, {y, count});
}

}  // namespace ds4::cpu
