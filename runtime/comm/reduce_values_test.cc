#include "runtime/comm/reduce_values.h"

#include <vector>

#include <gtest/gtest.h>

#include "runtime/comm/run_ranks.h"

namespace kp::comm {
namespace {

using comm::testing::RunRanks;
const c10::Device kCpu(c10::kCPU);

TEST(AllReduceValues, EveryRankGetsTheReduction) {
  std::vector<std::vector<double>> got(3), sums(3);
  RunRanks(3, [&](int r, Communicator& comm) {
    got[r] = {0.5 * r, -1.0 * r, 1e-12 * r};  // float64: the 1e-12 survives
    EXPECT_TRUE(AllReduceValues(comm, got[r], ReduceOp::kMax, kCpu).ok());
    sums[r] = {1.25 + r};
    EXPECT_TRUE(AllReduceValues(comm, sums[r], ReduceOp::kSum, kCpu).ok());
  });
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(got[r], (std::vector<double>{1.0, 0.0, 2e-12})) << "rank " << r;
    EXPECT_DOUBLE_EQ(sums[r][0], 6.75) << "rank " << r;
  }
}

// Integers travel exactly: values past float64's 53-bit mantissa survive.
TEST(AllReduceValues, IntegersStayExact) {
  constexpr int64_t kBig = (int64_t{1} << 60) + 1;
  std::vector<std::vector<int64_t>> got(3);
  RunRanks(3, [&](int r, Communicator& comm) {
    got[r] = {kBig + r, -r};
    EXPECT_TRUE(AllReduceValues(comm, got[r], ReduceOp::kMax, kCpu).ok());
  });
  for (int r = 0; r < 3; ++r) EXPECT_EQ(got[r], (std::vector<int64_t>{kBig + 2, 0})) << "rank " << r;
}

TEST(AllReduceRange, ReportsLowestAndHighestOnEveryRank) {
  for (const bool differ : {false, true}) {
    std::vector<ValueRange> got(4);
    RunRanks(4, [&](int r, Communicator& comm) {
      const int64_t step = differ && r == 2 ? 95 : 100;
      auto range = AllReduceRange(comm, step, kCpu);
      ASSERT_TRUE(range.ok()) << range.status();
      got[r] = *range;
    });
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(got[r].lowest, differ ? 95 : 100) << "rank " << r;
      EXPECT_EQ(got[r].highest, 100) << "rank " << r;
      EXPECT_EQ(got[r].AllEqual(), !differ) << "rank " << r;
    }
  }
}

TEST(AllReduceRange, RefusesTheOneValueWithoutANegation) {
  RunRanks(1, [&](int, Communicator& comm) { EXPECT_FALSE(AllReduceRange(comm, INT64_MIN, kCpu).ok()); });
}

// One rank's false makes AllRanks false everywhere; one rank's true makes
// AnyRank true everywhere; unanimous inputs pass through.
TEST(RankFlags, AllAndAnyAgreeOnEveryRank) {
  struct Case {
    std::vector<bool> mine;
    bool all, any;
  };
  for (const Case& c : {Case{{true, true, true}, true, true}, Case{{true, false, true}, false, true},
                        Case{{false, false, false}, false, false}, Case{{false, false, true}, false, true}}) {
    std::vector<int> all(3, -1), any(3, -1);
    RunRanks(3, [&](int r, Communicator& comm) {
      auto a = AllRanks(&comm, c.mine[r], kCpu);
      auto b = AnyRank(&comm, c.mine[r], kCpu);
      ASSERT_TRUE(a.ok() && b.ok());
      all[r] = *a;
      any[r] = *b;
    });
    for (int r = 0; r < 3; ++r) {
      EXPECT_EQ(all[r], c.all) << "rank " << r;
      EXPECT_EQ(any[r], c.any) << "rank " << r;
    }
  }
  // No communicator: a rank alone answers for itself.
  EXPECT_TRUE(*AllRanks(nullptr, true, kCpu));
  EXPECT_FALSE(*AnyRank(nullptr, false, kCpu));
}

}  // namespace
}  // namespace kp::comm
