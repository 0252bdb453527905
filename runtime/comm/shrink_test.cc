#include "runtime/comm/shrink.h"

#include <ATen/ATen.h>

#include <functional>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "runtime/comm/conformance.h"
#include "runtime/comm/fake_communicator.h"

namespace kp::comm {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

std::vector<absl::Status> OnThreads(int n, const std::function<absl::Status(int)>& fn) {
  std::vector<absl::Status> out(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back([&, r] { out[r] = fn(r); });
  for (auto& t : threads) t.join();
  return out;
}

// Every rank's input is drawn from (seed, rank), so any rank can compute the
// expected sum over a set of ranks in float64.
at::Tensor Input(uint64_t seed, int rank) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed * 1000 + rank);
  return at::randn({257}, gen, at::kFloat);
}

absl::Status CheckSum(Communicator& comm, uint64_t seed, int my_old_rank,
                      const std::vector<int>& old_ranks) {
  at::Tensor t = Input(seed, my_old_rank);
  KP_RETURN_IF_ERROR(comm.AllReduce(t, ReduceOp::kSum));
  at::Tensor want = at::zeros({257}, at::kDouble);
  for (int r : old_ranks) want += Input(seed, r).to(at::kDouble);
  const double err = (t.to(at::kDouble) - want).abs().max().item<double>();
  if (err > 1e-5) {
    return absl::InternalError(absl::StrCat("rank ", my_old_rank, ": sum off by ", err));
  }
  return absl::OkStatus();
}

TEST(ShrinkRankMapTest, RenumbersDenselyInOldOrder) {
  auto m = ShrinkRankMap(5, {3, 1});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m, (std::vector<int>{0, -1, 1, -1, 2}));
  EXPECT_EQ(ShrinkTag({3, 1, 3}), "x1_3");
  EXPECT_EQ(ShrinkRankMap(3, {3}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ShrinkRankMap(2, {0, 1}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(AgreeOnSurvivorsTest, DeadRankNeverWritesAndEveryoneGetsTheSameList) {
  InMemoryStore store;
  AgreeOptions o;
  o.window = milliseconds(400);
  std::vector<std::vector<int>> got(4);
  auto st = OnThreads(4, [&](int r) -> absl::Status {
    if (r == 2) return absl::OkStatus();  // dead
    // Survivors notice the failure at different times.
    std::this_thread::sleep_for(milliseconds(60 * r));
    KP_ASSIGN_OR_RETURN(got[r], AgreeOnSurvivors(store, "g0", r, 4, o));
    return absl::OkStatus();
  });
  for (int r : {0, 1, 3}) {
    ASSERT_TRUE(st[r].ok()) << st[r];
    EXPECT_EQ(got[r], (std::vector<int>{0, 1, 3})) << "rank " << r;
  }
}

TEST(AgreeOnSurvivorsTest, ExpectedCountDecidesBeforeTheWindow) {
  InMemoryStore store;
  AgreeOptions o;
  o.window = milliseconds(20000);
  o.expected_survivors = 2;
  const auto t0 = Clock::now();
  auto st = OnThreads(3, [&](int r) -> absl::Status {
    if (r == 0) return absl::OkStatus();
    KP_ASSIGN_OR_RETURN(auto alive, AgreeOnSurvivors(store, "g", r, 3, o));
    if (alive != std::vector<int>{1, 2}) return absl::InternalError("wrong survivors");
    return absl::OkStatus();
  });
  EXPECT_LT(Clock::now() - t0, milliseconds(5000));
  for (int r : {1, 2}) EXPECT_TRUE(st[r].ok()) << st[r];
}

TEST(AgreeOnSurvivorsTest, TooFewSurvivorsIsADeadlineNamingWhoCame) {
  InMemoryStore store;
  AgreeOptions o;
  o.window = milliseconds(200);
  o.min_survivors = 3;
  auto st = OnThreads(3, [&](int r) -> absl::Status {
    if (r == 1) return absl::OkStatus();
    return AgreeOnSurvivors(store, "g", r, 3, o).status();
  });
  for (int r : {0, 2}) {
    EXPECT_EQ(st[r].code(), absl::StatusCode::kDeadlineExceeded) << st[r];
    EXPECT_NE(st[r].message().find("timeout waiting for 3 survivors"), std::string::npos) << st[r];
    EXPECT_NE(st[r].message().find("[0,2]"), std::string::npos) << st[r];
  }
}

TEST(AgreeOnSurvivorsTest, LateSurvivorIsLeftOut) {
  InMemoryStore store;
  AgreeOptions o;
  o.window = milliseconds(150);
  auto st = OnThreads(3, [&](int r) -> absl::Status {
    if (r == 2) {
      std::this_thread::sleep_for(milliseconds(600));  // after the list closed
    }
    auto alive = AgreeOnSurvivors(store, "g", r, 3, o);
    if (r == 2) {
      return alive.status().code() == absl::StatusCode::kFailedPrecondition
                 ? absl::OkStatus()
                 : absl::InternalError(absl::StrCat("late rank got ", alive.status().ToString()));
    }
    if (!alive.ok()) return alive.status();
    return *alive == std::vector<int>{0, 1} ? absl::OkStatus()
                                            : absl::InternalError("wrong survivors");
  });
  for (int r = 0; r < 3; ++r) EXPECT_TRUE(st[r].ok()) << st[r];
}

// Four ranks; rank 2 dies; the survivors' all-reduce fails, they agree,
// shrink, and every collective (the full conformance suite) works on the
// three of them.
TEST(FakeShrinkTest, SurvivorsShrinkAndPassConformance) {
  FakeWorld world(4, milliseconds(300));
  InMemoryStore store;
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int r = 0; r < 4; ++r) comms.push_back(world.Join(r));
  AgreeOptions o;
  o.window = milliseconds(1500);
  auto st = OnThreads(4, [&](int r) -> absl::Status {
    KP_RETURN_IF_ERROR(CheckSum(*comms[r], 1, r, {0, 1, 2, 3}));
    if (r == 2) {
      world.Kill(2);
      return absl::OkStatus();
    }
    at::Tensor t = Input(2, r);
    absl::Status failed = comms[r]->AllReduce(t, ReduceOp::kSum);
    if (failed.code() != absl::StatusCode::kDeadlineExceeded) {
      return absl::InternalError(absl::StrCat("want DEADLINE_EXCEEDED, got ", failed.ToString()));
    }
    comms[r]->Abort(failed);
    KP_ASSIGN_OR_RETURN(ShrinkResult s, ShrinkToSurvivors(*comms[r], store, "gen0", o));
    if (s.survivors != std::vector<int>{0, 1, 3} ||
        s.old_to_new != std::vector<int>{0, 1, -1, 2}) {
      return absl::InternalError("wrong survivors or rank map");
    }
    if (s.comm->size() != 3 || s.comm->rank() != s.old_to_new[r]) {
      return absl::InternalError("wrong rank or size");
    }
    KP_RETURN_IF_ERROR(CheckSum(*s.comm, 3, r, {0, 1, 3}));
    return testing::RunConformance(*s.comm, 77);
  });
  for (int r = 0; r < 4; ++r) EXPECT_TRUE(st[r].ok()) << "rank " << r << ": " << st[r];
}

TEST(FakeShrinkTest, RankInItsOwnExcludeListIsRejected) {
  FakeWorld world(2, milliseconds(100));
  auto c = world.Join(1);
  EXPECT_EQ(c->Shrink({1}).status().code(), absl::StatusCode::kInvalidArgument);
}

// Two failures in a row through the in-place wrapper: 4 -> 3 -> 2 ranks; the
// pointer stays, rank/size/generation follow.
TEST(ReformableCommunicatorTest, ReformsTwiceInPlace) {
  FakeWorld world(4, milliseconds(300));
  InMemoryStore store;
  std::vector<std::unique_ptr<ReformableCommunicator>> comms;
  for (int r = 0; r < 4; ++r) {
    comms.push_back(std::make_unique<ReformableCommunicator>(world.Join(r), &store, "dp"));
  }
  AgreeOptions o;
  o.window = milliseconds(1500);
  auto st = OnThreads(4, [&](int r) -> absl::Status {
    ReformableCommunicator& c = *comms[r];
    KP_RETURN_IF_ERROR(CheckSum(c, 1, r, {0, 1, 2, 3}));
    if (r == 3) {
      world.Kill(3);
      return absl::OkStatus();
    }
    at::Tensor t = Input(2, r);
    if (c.AllReduce(t, ReduceOp::kSum).ok()) return absl::InternalError("all-reduce survived");
    KP_ASSIGN_OR_RETURN(auto first, c.Reform(o));
    if (first.generation != 1 || first.old_size != 4 || c.size() != 3 || c.rank() != r) {
      return absl::InternalError(absl::StrCat("after first reform: rank ", c.rank(), " size ",
                                              c.size(), " gen ", first.generation));
    }
    KP_RETURN_IF_ERROR(CheckSum(c, 4, r, {0, 1, 2}));
    if (r == 0) {
      world.Kill(0);
      return absl::OkStatus();
    }
    if (c.AllReduce(t, ReduceOp::kSum).ok()) return absl::InternalError("all-reduce survived");
    KP_ASSIGN_OR_RETURN(auto second, c.Reform(o));
    if (second.generation != 2 || c.size() != 2 || c.rank() != r - 1 ||
        second.survivors != std::vector<int>{1, 2}) {
      return absl::InternalError("after second reform: wrong layout");
    }
    return CheckSum(c, 5, r, {1, 2});
  });
  for (int r = 0; r < 4; ++r) EXPECT_TRUE(st[r].ok()) << "rank " << r << ": " << st[r];
}

}  // namespace
}  // namespace kp::comm
