#include "runtime/engine/data/zigzag.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace kp::data {
namespace {

TEST(Zigzag, ShardHoldsChunksIAnd2NMinus1MinusI) {
  at::manual_seed(0);
  for (int world : {1, 2, 3, 4}) {
    const int64_t L = 2 * world * 5;
    at::Tensor x = at::randn({2, L, 3}, at::kDouble);
    std::vector<at::Tensor> shards;
    std::vector<at::Tensor> positions;
    for (int r = 0; r < world; ++r) {
      auto s = ZigzagShard(x, 1, r, world);
      auto p = ZigzagPositions(L, r, world);
      ASSERT_TRUE(s.ok() && p.ok());
      ASSERT_EQ(s->size(1), L / world);
      ASSERT_EQ(p->numel(), L / world);
      // Chunk r then chunk 2N-1-r, each of 5 tokens.
      EXPECT_EQ((*p)[0].item<int64_t>(), 5 * r);
      EXPECT_EQ((*p)[5].item<int64_t>(), 5 * (2 * world - 1 - r));
      // The shard is x at the positions it claims.
      EXPECT_TRUE(at::equal(*s, x.index_select(1, *p)));
      shards.push_back(*s);
      positions.push_back(*p);
    }
    auto back = ZigzagUnshard(shards, 1);
    ASSERT_TRUE(back.ok());
    EXPECT_TRUE(at::equal(*back, x));
    EXPECT_TRUE(at::equal(std::get<0>(at::sort(at::cat(positions))), at::arange(L, at::kLong)));
  }
}

TEST(Zigzag, TokensAlongLastDimAndNegativeDim) {
  at::Tensor tokens = at::randint(0, 100, {4, 16}, at::kLong);
  auto s = ZigzagShard(tokens, -1, 1, 2);
  ASSERT_TRUE(s.ok());
  auto s0 = ZigzagShard(tokens, -1, 0, 2);
  auto back = ZigzagUnshard({*s0, *s}, -1);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(at::equal(*back, tokens));
}

TEST(Zigzag, RejectsBadLengthAndRank) {
  at::Tensor x = at::randn({10});
  EXPECT_EQ(ZigzagShard(x, 0, 0, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ZigzagShard(x, 0, 5, 5).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ZigzagPositions(12, 0, 4).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kp::data
