#include "runtime/comm/fake_communicator.h"

#include <ATen/ATen.h>

#include <thread>

#include <gtest/gtest.h>

#include "runtime/comm/conformance.h"

namespace kp::comm {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// Runs fn(rank, comm) on one thread per rank and returns each rank's status.
template <typename Fn>
std::vector<absl::Status> OnAllRanks(FakeWorld& world, Fn fn) {
  std::vector<absl::Status> out(world.size());
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int r = 0; r < world.size(); ++r) comms.push_back(world.Join(r));
  std::vector<std::thread> threads;
  for (int r = 0; r < world.size(); ++r) {
    threads.emplace_back([&, r] { out[r] = fn(r, *comms[r]); });
  }
  for (auto& t : threads) t.join();
  return out;
}

class FakeConformance : public ::testing::TestWithParam<int> {};

TEST_P(FakeConformance, AllCalls) {
  FakeWorld world(GetParam(), milliseconds(5000));
  auto st = OnAllRanks(world, [](int, Communicator& c) {
    return testing::RunConformance(c, 42);
  });
  for (int r = 0; r < world.size(); ++r) EXPECT_TRUE(st[r].ok()) << "rank " << r << ": " << st[r];
}

INSTANTIATE_TEST_SUITE_P(Sizes, FakeConformance, ::testing::Values(1, 2, 4));

TEST(FakeCommunicatorTest, KilledRankMakesPeersTimeOut) {
  const milliseconds timeout(200);
  FakeWorld world(3, timeout);
  world.Kill(2);
  std::vector<double> waited(3);
  auto st = OnAllRanks(world, [&](int r, Communicator& c) {
    at::Tensor t = at::randn({8});
    auto t0 = Clock::now();
    auto s = c.AllReduce(t, ReduceOp::kSum);
    waited[r] = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    return s;
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(st[r].code(), absl::StatusCode::kDeadlineExceeded) << st[r];
    EXPECT_NE(st[r].message().find("ranks [2]"), std::string::npos) << st[r];
    EXPECT_NE(st[r].message().find("200 ms"), std::string::npos) << st[r];
    EXPECT_GE(waited[r], 190);
    EXPECT_LT(waited[r], 200 + 2000);
  }
  EXPECT_EQ(st[2].code(), absl::StatusCode::kAborted) << st[2];
}

TEST(FakeCommunicatorTest, RecvFromSilentPeerTimesOut) {
  FakeWorld world(2, milliseconds(100));
  auto c0 = world.Join(0);
  at::Tensor got = at::empty({4});
  auto s = c0->SendRecvAsync(at::Tensor(), 1, got, 1)->Wait();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_NE(s.message().find("rank 1"), std::string::npos) << s;
}

TEST(FakeCommunicatorTest, AbortFromAnotherThreadEndsAWaitAtOnce) {
  FakeWorld world(2, milliseconds(20000));
  auto c0 = world.Join(0);
  at::Tensor t = at::randn({4});
  auto t0 = Clock::now();
  std::thread aborter([&] {
    std::this_thread::sleep_for(milliseconds(50));
    EXPECT_TRUE(c0->OldestPendingOp().has_value());
    c0->Abort(absl::UnavailableError("peer 1 is gone"));
  });
  auto s = c0->AllReduce(t, ReduceOp::kSum);
  aborter.join();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_LT(Clock::now() - t0, milliseconds(5000));
  // Every later call fails with ABORTED.
  EXPECT_EQ(c0->Barrier().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(c0->AllReduceAsync(t, ReduceOp::kSum)->Wait().code(), absl::StatusCode::kAborted);
}

TEST(FakeCommunicatorTest, BadArgumentsNameTheProblem) {
  FakeWorld world(2, milliseconds(100));
  auto c0 = world.Join(0);
  at::Tensor in = at::randn({4}), out = at::empty({5});
  auto s = c0->AllGather(in, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("expected 8"), std::string::npos) << s;
  at::Tensor nc = at::randn({4, 4}).t();
  EXPECT_EQ(c0->AllReduce(nc, ReduceOp::kSum).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kp::comm
