#include "kvstore/save_policy.h"

#include <gtest/gtest.h>

#include <vector>

#include "ds4/error.h"

namespace ds4::kvstore {
namespace {

constexpr int32_t kUser = 128803, kAssistant = 128804;

TEST(SavePolicy, StableLengthTrimsThenAligns) {
    const SavePolicy p;
    EXPECT_EQ(stable_store_length(p, 5000), 4096u);  // 5000-32 = 4968 -> 4096
    EXPECT_EQ(stable_store_length(p, 2080), 2048u);  // exactly one block after the trim
    EXPECT_EQ(stable_store_length(p, 2079), 2079u);  // 2047 aligns to 0 < min: keep P
    EXPECT_EQ(stable_store_length(p, 544), 544u);    // not above min + trim
    SavePolicy unaligned;
    unaligned.boundary_align = 0;
    EXPECT_EQ(stable_store_length(unaligned, 5000), 4968u);
}

TEST(SavePolicy, ColdSaveUsesTheUserAnchorBeforeTheFirstAssistant) {
    const SavePolicy p;
    std::vector<int32_t> prompt(3000, 7);
    prompt[100] = kUser;
    prompt[900] = kUser;  // the last User marker before the first Assistant marker
    prompt[1500] = kAssistant;
    prompt[2000] = kUser;  // after the first Assistant: not an anchor
    EXPECT_EQ(cold_store_length(p, prompt, 0, kUser, kAssistant), 900u);
    prompt[900] = 7;  // only an anchor below min_tokens remains: fall back to stable(P)
    EXPECT_EQ(cold_store_length(p, prompt, 0, kUser, kAssistant), 2048u);
}

TEST(SavePolicy, NoColdSaveAfterReuseOrOutsideTheWindow) {
    const SavePolicy p;
    const std::vector<int32_t> small(511, 7), big(30001, 7), ok(600, 7);
    EXPECT_EQ(cold_store_length(p, small, 0, kUser, kAssistant), 0u);
    EXPECT_EQ(cold_store_length(p, big, 0, kUser, kAssistant), 0u);
    EXPECT_EQ(cold_store_length(p, ok, 10, kUser, kAssistant), 0u);
    EXPECT_EQ(cold_store_length(p, ok, 0, kUser, kAssistant), 600u);
    SavePolicy off;
    off.cold_max_tokens = 0;
    EXPECT_EQ(cold_store_length(off, ok, 0, kUser, kAssistant), 0u);
}

TEST(SavePolicy, ContinuedSavesAtAlignedSteps) {
    const SavePolicy p;
    EXPECT_EQ(continued_step(p), 10240u);
    EXPECT_TRUE(continued_save_due(p, 10240, 0));
    EXPECT_FALSE(continued_save_due(p, 10240, 10240));
    EXPECT_FALSE(continued_save_due(p, 10000, 0));
    EXPECT_TRUE(continued_save_due(p, 20480, 10240));
    SavePolicy off;
    off.continued_interval = 0;
    EXPECT_FALSE(continued_save_due(off, 10240, 0));
}

TEST(SavePolicy, ValidateNamesTheFlag) {
    SavePolicy p;
    p.cold_max_tokens = 100;
    try {
        p.validate();
        FAIL() << "expected an error";
    } catch (const ds4::Error& e) {
        EXPECT_STREQ(
            e.what(),
            "--kv-cache-cold-max-tokens must be 0 or >= --kv-cache-min-tokens (512), got 100");
    }
}

}  // namespace
}  // namespace ds4::kvstore
