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

}  // namespace
}  // namespace kp::comm
