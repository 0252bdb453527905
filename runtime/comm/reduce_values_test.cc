#include "runtime/comm/reduce_values.h"

#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/comm/fake_communicator.h"

namespace kp::comm {
namespace {

TEST(AllReduceValues, EveryRankGetsTheReduction) {
  FakeWorld world(3, std::chrono::seconds(30));
  std::vector<std::vector<double>> got(3), sums(3);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 3; ++r) {
    ranks.emplace_back([&, r] {
      auto comm = world.Join(r);
      got[r] = {0.5 * r, -1.0 * r, 1e-12 * r};  // float64: the 1e-12 survives
      EXPECT_TRUE(AllReduceValues(*comm, got[r], ReduceOp::kMax, c10::Device(c10::kCPU)).ok());
      sums[r] = {1.25 + r};
      EXPECT_TRUE(AllReduceValues(*comm, sums[r], ReduceOp::kSum, c10::Device(c10::kCPU)).ok());
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(got[r], (std::vector<double>{1.0, 0.0, 2e-12})) << "rank " << r;
    EXPECT_DOUBLE_EQ(sums[r][0], 6.75) << "rank " << r;
  }
}

// Integers travel exactly: values past float64's 53-bit mantissa survive.
TEST(AllReduceValues, IntegersStayExact) {
  FakeWorld world(3, std::chrono::seconds(30));
  constexpr int64_t kBig = (int64_t{1} << 60) + 1;
  std::vector<std::vector<int64_t>> got(3);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 3; ++r) {
    ranks.emplace_back([&, r] {
      auto comm = world.Join(r);
      got[r] = {kBig + r, -r};
      EXPECT_TRUE(AllReduceValues(*comm, got[r], ReduceOp::kMax, c10::Device(c10::kCPU)).ok());
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < 3; ++r) EXPECT_EQ(got[r], (std::vector<int64_t>{kBig + 2, 0})) << "rank " << r;
}

TEST(AllReduceRange, ReportsLowestAndHighestOnEveryRank) {
  for (const bool differ : {false, true}) {
    FakeWorld world(4, std::chrono::seconds(30));
    std::vector<ValueRange> got(4);
    std::vector<std::thread> ranks;
    for (int r = 0; r < 4; ++r) {
      ranks.emplace_back([&, r] {
        auto comm = world.Join(r);
        const int64_t step = differ && r == 2 ? 95 : 100;
        auto range = AllReduceRange(*comm, step, c10::Device(c10::kCPU));
        ASSERT_TRUE(range.ok()) << range.status();
        got[r] = *range;
      });
    }
    for (auto& t : ranks) t.join();
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(got[r].lowest, differ ? 95 : 100) << "rank " << r;
      EXPECT_EQ(got[r].highest, 100) << "rank " << r;
      EXPECT_EQ(got[r].AllEqual(), !differ) << "rank " << r;
    }
  }
}

TEST(AllReduceRange, RefusesTheOneValueWithoutANegation) {
  FakeWorld world(1, std::chrono::seconds(5));
  auto comm = world.Join(0);
  EXPECT_FALSE(AllReduceRange(*comm, INT64_MIN, c10::Device(c10::kCPU)).ok());
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
    FakeWorld world(3, std::chrono::seconds(30));
    std::vector<int> all(3, -1), any(3, -1);
    std::vector<std::thread> ranks;
    for (int r = 0; r < 3; ++r) {
      ranks.emplace_back([&, r] {
        auto comm = world.Join(r);
        auto a = AllRanks(comm.get(), c.mine[r], c10::Device(c10::kCPU));
        auto b = AnyRank(comm.get(), c.mine[r], c10::Device(c10::kCPU));
        ASSERT_TRUE(a.ok() && b.ok());
        all[r] = *a;
        any[r] = *b;
      });
    }
    for (auto& t : ranks) t.join();
    for (int r = 0; r < 3; ++r) {
      EXPECT_EQ(all[r], c.all) << "rank " << r;
      EXPECT_EQ(any[r], c.any) << "rank " << r;
    }
  }
  // No communicator: a rank alone answers for itself.
  EXPECT_TRUE(*AllRanks(nullptr, true, c10::Device(c10::kCPU)));
  EXPECT_FALSE(*AnyRank(nullptr, false, c10::Device(c10::kCPU)));
}

}  // namespace
}  // namespace kp::comm
