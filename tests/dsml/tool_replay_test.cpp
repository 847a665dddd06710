// Exact replay memory (interface.md §3.9): lookup rules, dedup, LRU bounds.
#include "text/tool_replay.h"

#include <gtest/gtest.h>

namespace ds4::text {
namespace {

using Ids = std::vector<std::string>;
constexpr std::size_t kPerId = ToolReplayMemory::kBytesPerId;

TEST(ToolReplay, AllIdsOfATurnShareOneBlock) {
    ToolReplayMemory memory;
    memory.remember(Ids{"call_a", "call_b"}, "BLOCK1");
    EXPECT_EQ(memory.id_count(), 2u);
    EXPECT_EQ(memory.block_count(), 1u);
    EXPECT_EQ(memory.accounted_bytes(), 6 + 2 * (6 + kPerId));
    auto block = memory.lookup(Ids{"call_b", "call_a"});
    ASSERT_TRUE(block);
    EXPECT_EQ(*block, "BLOCK1");
    EXPECT_EQ(*memory.lookup(Ids{"call_a"}), "BLOCK1");
}

TEST(ToolReplay, LookupNeedsEveryIdAndOneBlock) {
    ToolReplayMemory memory;
    memory.remember(Ids{"a"}, "X");
    memory.remember(Ids{"b"}, "Y");
    EXPECT_FALSE(memory.lookup(Ids{"a", "b"}));        // two different blocks
    EXPECT_FALSE(memory.lookup(Ids{"a", "missing"}));  // one id unknown
    EXPECT_FALSE(memory.lookup(Ids{}));
    memory.remember(Ids{"c"}, "X");  // same content: deduplicated
    EXPECT_EQ(memory.block_count(), 2u);
    EXPECT_EQ(*memory.lookup(Ids{"a", "c"}), "X");
}

TEST(ToolReplay, RememberingAnIdAgainRepointsItAndFreesTheOldBlock) {
    ToolReplayMemory memory;
    memory.remember(Ids{"a"}, "OLD");
    memory.remember(Ids{"a"}, "NEW");
    EXPECT_EQ(memory.id_count(), 1u);
    EXPECT_EQ(memory.block_count(), 1u);
    EXPECT_EQ(*memory.peek("a"), "NEW");
    EXPECT_EQ(memory.accounted_bytes(), 3 + 1 + kPerId);
}

TEST(ToolReplay, IdBoundEvictsLeastRecentlyUsed) {
    ToolReplayMemory memory(3, 1 << 20);
    memory.remember(Ids{"1"}, "A");
    memory.remember(Ids{"2"}, "B");
    memory.remember(Ids{"3"}, "C");
    ASSERT_TRUE(memory.lookup(Ids{"1"}));  // touch: "2" is now the oldest
    memory.remember(Ids{"4"}, "D");
    EXPECT_EQ(memory.id_count(), 3u);
    EXPECT_FALSE(memory.peek("2"));
    EXPECT_TRUE(memory.peek("1"));
    EXPECT_TRUE(memory.peek("4"));
    EXPECT_EQ(memory.block_count(), 3u);
}

TEST(ToolReplay, ByteBoundEvictsAndKeepsHandedOutBlocksAlive) {
    const std::size_t block = 1000;
    ToolReplayMemory memory(100, 2 * (block + 1 + kPerId) + 10);
    memory.remember(Ids{"a"}, std::string(block, 'a'));
    auto held = memory.lookup(Ids{"a"});
    memory.remember(Ids{"b"}, std::string(block, 'b'));
    EXPECT_EQ(memory.id_count(), 2u);
    memory.remember(Ids{"c"}, std::string(block, 'c'));
    EXPECT_EQ(memory.id_count(), 2u);
    EXPECT_FALSE(memory.peek("a"));
    EXPECT_LE(memory.accounted_bytes(), memory.max_bytes());
    ASSERT_TRUE(held);
    EXPECT_EQ(held->size(), block);  // still valid after eviction
    EXPECT_EQ((*held)[0], 'a');
}

TEST(ToolReplay, ABlockLargerThanTheBoundIsNotStored) {
    ToolReplayMemory memory(10, 500);
    memory.remember(Ids{"small"}, "x");
    memory.remember(Ids{"big"}, std::string(600, 'y'));
    EXPECT_FALSE(memory.peek("big"));
    EXPECT_TRUE(memory.peek("small"));  // nothing was evicted for it
}

TEST(ToolReplay, ManyTurnsStayWithinBothBounds) {
    ToolReplayMemory memory(50, 20000);
    for (int turn = 0; turn < 1000; ++turn) {
        const Ids ids = {"call_" + std::to_string(turn) + "a", "call_" + std::to_string(turn) + "b"};
        memory.remember(ids, std::string(100 + turn % 300, static_cast<char>('a' + turn % 26)));
        ASSERT_LE(memory.id_count(), 50u);
        ASSERT_LE(memory.accounted_bytes(), 20000u);
        ASSERT_TRUE(memory.lookup(ids));  // the newest turn is always there
    }
}

}  // namespace
}  // namespace ds4::text
