// Directional steering (spec interface.md §7.5, formats.md §8.1, model.md §4.6 note): one
// direction d per layer, read from a raw little-endian f32 file of n_layer × n_embd
// values (layer-major, no header; 43 × 4096 = 704,512 bytes for the published model).
// After a sublayer's output row y (attention output after its projection, or the whole
// FFN output: routed + shared experts), before the HC post step:
//
//     y ← y − scale · d · (d·y)
//
// Positive scale removes the direction (scale 1 with a unit d projects it out exactly),
// negative amplifies it. The directions are used as stored (the builder normalises them;
// ds4 does not renormalise at load). A scale of 0 leaves the sublayer untouched, so the
// output is bit-identical to running without steering.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ds4::cpu {

// The direction table: n_layer rows of n_embd floats.
class SteeringDirections {
public:
    // Takes n_layer × n_embd values; throws if the count differs.
    SteeringDirections(std::vector<float> values, uint32_t n_layer, uint32_t n_embd);
    // Reads `path`. Throws ds4::Error naming the file when it cannot be read or its size is
    // not exactly n_layer × n_embd × 4 bytes ("… has size N bytes, expected M bytes").
    static SteeringDirections load(const std::string& path, uint32_t n_layer, uint32_t n_embd);

    uint32_t n_layer() const { return n_layer_; }
    uint32_t n_embd() const { return n_embd_; }
    std::span<const float> layer(uint32_t il) const;
    std::span<const float> values() const { return values_; }

private:
    std::vector<float> values_;
    uint32_t n_layer_ = 0, n_embd_ = 0;
};

// The scales in effect from what the user set (interface.md §7.5): attn defaults to 0;
// ffn defaults to 1 when a file is given and neither scale was set, else 0. Throws for a
// scale that is not finite or outside [-100, 100], and for a non-zero scale without a file.
struct SteeringScales {
    float attn = 0.0f, ffn = 0.0f;
};
SteeringScales resolve_steering_scales(bool have_file, std::optional<float> attn, std::optional<float> ffn);

// Writes a direction file (the inverse of load; for tools and tests). Throws on I/O errors.
void write_steering_file(const std::string& path, std::span<const float> values);

// y ← y − scale · d · (d·y) on each of `rows` rows of d.size() values at y. The dot
// product is an f32 sum in index order (ds4's CPU order), the update one f32 multiply-
// subtract per value with coefficient scale·(d·y).
void steer_rows(float* y, uint64_t rows, std::span<const float> d, float scale);

enum class SteeringSite { attn, ffn };

// Test and tool hook: sees each steered-or-not sublayer output of a chunk (rows × n_embd,
// token-major) before and after steering (equal spans' contents when the site's scale is
// 0). Called for every layer whenever a probe is set, steering on or off.
using SteeringProbe = std::function<void(uint32_t il, SteeringSite site, std::span<const float> before,
                                         std::span<const float> after)>;

// What CpuForward applies: the shared direction table (null: steering off) and the two
// scales, plus an optional probe.
class Steering {
public:
    Steering() = default;
    Steering(std::shared_ptr<const SteeringDirections> dirs, float attn_scale, float ffn_scale);

    bool enabled(SteeringSite site) const { return dirs_ && scale(site) != 0.0f; }
    float scale(SteeringSite site) const { return site == SteeringSite::attn ? attn_ : ffn_; }
    void set_probe(SteeringProbe probe) { probe_ = std::move(probe); }

    // Applies the site's steering to the chunk's sublayer output y (rows × n_embd) of
    // layer il, and calls the probe if any.
    void apply(uint32_t il, SteeringSite site, float* y, uint32_t rows, uint64_t n_embd);

private:
    std::shared_ptr<const SteeringDirections> dirs_;
    float attn_ = 0.0f, ffn_ = 0.0f;
    SteeringProbe probe_;
    std::vector<float> before_;  // probe copy of y, reused
};

}  // namespace ds4::cpu
