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

struct RunOptions {
    ThreadPool* pool = nullptr;
    CpuForward::BlockObserver observer;
    KvState* state = nullptr;  // fresh state when null
    uint32_t n_tokens = 0;     // a prefix of the golden's tokens; 0 = all T
};

// Evaluates the tokens in consecutive chunks of sizes[0], sizes[1], … (the last size
// repeats until the sequence is done); returns n_tokens × V logits, every row.
std::vector<float> run_in_chunks(const LoadedGolden& lg, const std::vector<uint32_t>& sizes,
                                 const RunOptions& options = {});

// sizes repeated cyclically until they cover T tokens.
std::vector<uint32_t> cyclic_schedule(const std::vector<uint32_t>& sizes, uint32_t T);

}  // namespace ds4::cpu::test
