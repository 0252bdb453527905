#include "runtime/parallel/zigzag.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace kp::parallel {
namespace {

TEST(Zigzag, RankHoldsChunksIAnd2NMinus1MinusI) {
  const at::Tensor seq = at::arange(16, at::kLong).view({1, 16});
  // cp 4 -> 8 chunks of 2: rank 1 holds chunks 1 and 6.
  const at::Tensor local = *ZigzagShard(seq, 1, 4, 1);
  EXPECT_TRUE(at::equal(local, at::tensor({2, 3, 12, 13}, at::kLong).view({1, 4})));
  EXPECT_TRUE(at::equal(ZigzagPositions(16, 4, 1), at::tensor({2, 3, 12, 13}, at::kLong)));
}

TEST(Zigzag, ShardUnshardRoundTrip) {
  for (int cp : {1, 2, 3, 4, 8}) {
    const int64_t len = 2 * cp * 3;
    const at::Tensor full = at::randn({2, 3, len, 5});
    std::vector<at::Tensor> locals;
    for (int r = 0; r < cp; ++r) {
      locals.push_back(*ZigzagShard(full, 2, cp, r));
      EXPECT_EQ(locals.back().size(2), len / cp);
      // Positions name exactly the rows the shard took.
      EXPECT_TRUE(at::equal(locals.back(), full.index_select(2, ZigzagPositions(len, cp, r))));
    }
    EXPECT_TRUE(at::equal(*ZigzagUnshard(locals, 2), full)) << "cp " << cp;
    const at::Tensor by_rank = at::cat(locals, 2);
    EXPECT_TRUE(at::equal(ZigzagRankOrderToNatural(by_rank, 2, cp), full));
    EXPECT_TRUE(at::equal(ZigzagNaturalToRankOrder(full, 2, cp), by_rank));
  }
}

TEST(Zigzag, EveryRankGetsTheSameCausalWork) {
  // Work of a rank under causal masking: sum over its positions p of (p+1).
  const int cp = 4;
  const int64_t len = 64;
  int64_t first = -1;
  for (int r = 0; r < cp; ++r) {
    const int64_t work = (ZigzagPositions(len, cp, r) + 1).sum().item<int64_t>();
    if (first < 0) first = work;
    EXPECT_EQ(work, first) << "rank " << r;
  }
}

TEST(Zigzag, RejectsLengthsNotDivisibleBy2Cp) {
  const absl::Status st = ValidateZigzag(30, 4);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("divisible by 2*cp = 8"), std::string::npos) << st;
  EXPECT_NE(st.message().find("24 or 32"), std::string::npos) << st;
  EXPECT_FALSE(ZigzagShard(at::zeros({1, 30}), 1, 4, 0).ok());
  EXPECT_FALSE(ZigzagShard(at::zeros({1, 32}), 1, 4, 4).ok());  // rank out of range
  EXPECT_TRUE(ValidateZigzag(32, 4).ok());
  EXPECT_FALSE(ValidateZigzag(32, 0).ok());
}

}  // namespace
}  // namespace kp::parallel
