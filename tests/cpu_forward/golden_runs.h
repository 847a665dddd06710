// Runs a golden's token sequence through the CPU forward pass in a given chunk schedule.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cpu/forward.h"
#include "golden_model.h"

namespace ds4::cpu::test {

struct LoadedGolden {
    std::unique_ptr<Golden> golden;
    std::unique_ptr<CpuModel> model;
};

// Loads tests/data/golden/golden_<name>.safetensors once per process.
const LoadedGolden& loaded_golden(const std::string& name);

// Evaluates all T tokens in consecutive chunks of sizes[0], sizes[1], … (the last size
// repeats until the sequence is done) in one fresh KvState; returns T × V logits, every row.
std::vector<float> run_in_chunks(const LoadedGolden& lg, const std::vector<uint32_t>& sizes,
                                 ThreadPool* pool = nullptr, CpuForward::BlockObserver observer = {});

}  // namespace ds4::cpu::test
