#include "runtime/parallel/block_plan.h"

#include <gtest/gtest.h>

#include "runtime/parallel/zigzag.h"

namespace kp::parallel {
namespace {

// Visible (query row, key row) pairs covered by tasks, each pair once.
std::vector<std::vector<int>> Coverage(const std::vector<BlockTask>& tasks, int64_t tq,
                                       int64_t tk) {
  std::vector<std::vector<int>> seen(tq, std::vector<int>(tk, 0));
  for (const BlockTask& t : tasks) {
    for (int64_t i = 0; i < t.q_length; ++i) {
      for (int64_t j = 0; j < t.k_length; ++j) {
        if (t.mask == BlockMask::kCausal && j > i) continue;
        seen[t.q_offset + i][t.k_offset + j] += 1;
      }
    }
  }
  return seen;
}

int64_t PositionOf(const std::vector<Segment>& segs, int64_t row) {
  for (const Segment& s : segs) {
    if (row >= s.offset && row < s.offset + s.length) return s.position + row - s.offset;
  }
  return -1;
}

// Every visible pair exactly once, no hidden pair, for all zigzag rank pairs
// and for one rank's chunks against a whole gathered sequence.
TEST(BlockPlan, CoversExactlyTheCausallyVisiblePairs) {
  for (int cp : {1, 2, 3, 4}) {
    const int64_t chunk = 3;
    for (int r = 0; r < cp; ++r) {
      const auto qs = ZigzagSegments(r, cp, chunk);
      std::vector<std::vector<Segment>> ks;
      for (int s = 0; s < cp; ++s) ks.push_back(ZigzagSegments(s, cp, chunk));
      ks.push_back({{0, 2 * chunk * cp, 0}});
      for (const auto& k : ks) {
        const int64_t tk = k.back().offset + k.back().length;
        const auto seen = Coverage(PlanBlocks(qs, k, true), 2 * chunk, tk);
        for (int64_t i = 0; i < 2 * chunk; ++i) {
          for (int64_t j = 0; j < tk; ++j) {
            const int want = PositionOf(k, j) <= PositionOf(qs, i) ? 1 : 0;
            ASSERT_EQ(seen[i][j], want) << "cp " << cp << " rank " << r << " q " << i << " k "
                                        << j;
          }
        }
      }
    }
  }
}

TEST(BlockPlan, ZigzagRingStepsAreOneCallEach) {
  const int cp = 4;
  const int64_t c = 8;
  // Own block: one causal call over both chunks.
  auto own = PlanBlocks(ZigzagSegments(1, cp, c), ZigzagSegments(1, cp, c), true);
  ASSERT_EQ(own.size(), 1u);
  EXPECT_EQ(own[0], (BlockTask{0, 2 * c, 0, 2 * c, BlockMask::kCausal}));
  // Earlier rank: all queries against its first chunk.
  auto earlier = PlanBlocks(ZigzagSegments(2, cp, c), ZigzagSegments(0, cp, c), true);
  ASSERT_EQ(earlier.size(), 1u);
  EXPECT_EQ(earlier[0], (BlockTask{0, 2 * c, 0, c, BlockMask::kFull}));
  // Later rank: the second query chunk against both of its chunks.
  auto later = PlanBlocks(ZigzagSegments(0, cp, c), ZigzagSegments(3, cp, c), true);
  ASSERT_EQ(later.size(), 1u);
  EXPECT_EQ(later[0], (BlockTask{c, c, 0, 2 * c, BlockMask::kFull}));
}

TEST(BlockPlan, NonCausalIsOneFullBlock) {
  auto t = PlanBlocks(ZigzagSegments(0, 2, 4), ZigzagSegments(1, 2, 4), false);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0], (BlockTask{0, 8, 0, 8, BlockMask::kFull}));
}

}  // namespace
}  // namespace kp::parallel
