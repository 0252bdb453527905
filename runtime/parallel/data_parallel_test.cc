#include "runtime/parallel/data_parallel.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/nn/modules/linear.h>

#include <cmath>
#include <functional>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "runtime/comm/fake_communicator.h"
#include "runtime/parallel/dp_test_model.h"

namespace kp::parallel {
namespace {

using std::chrono::milliseconds;
using namespace dptest;  // NOLINT

// Ranks as threads over the fake backend.

TEST(FakeDataParallel, ThreadsEqualOneProcess) {
  comm::FakeWorld world(2, milliseconds(10000));
  std::vector<absl::Status> st(2);
  std::vector<std::thread> ts;
  for (int r = 0; r < 2; ++r) {
    ts.emplace_back([&, r] {
      auto comm = world.Join(r);
      st[r] = CompareToSingleProcess(Train(comm.get(), r, 1, 512), 1);
    });
  }
  for (auto& t : ts) t.join();
  for (auto& s : st) EXPECT_TRUE(s.ok()) << s;
}

TEST(GradientReducerTest, BucketsFollowReverseRegistrationOrder) {
  comm::FakeWorld world(1, milliseconds(1000));
  auto comm = world.Join(0);
  Net net(0);
  auto params = net.params();  // l1.w (384 floats), l1.b (32), l2.w (160), l2.b (5)
  GradientReducer one_each(comm.get(), params, 0);
  EXPECT_EQ(one_each.num_buckets(), 4);
  EXPECT_EQ(one_each.bucket_params(0), std::vector<int>{3});
  GradientReducer r(comm.get(), params, 160 * 4 + 5 * 4);
  ASSERT_EQ(r.num_buckets(), 2);
  EXPECT_EQ(r.bucket_params(0), (std::vector<int>{3, 2}));
  EXPECT_EQ(r.bucket_params(1), (std::vector<int>{1, 0}));
}

// A parameter outside the loss still gets an averaged (zero) gradient, and
// the collectives still match across ranks.
TEST(GradientReducerTest, UnusedParameterGetsZeroGradient) {
  comm::FakeWorld world(2, milliseconds(5000));
  std::vector<absl::Status> st(2);
  std::vector<std::thread> ts;
  for (int r = 0; r < 2; ++r) {
    ts.emplace_back([&, r] {
      auto comm = world.Join(r);
      Net net(0);
      auto params = net.params();
      GradientReducer red(comm.get(), params, 0);
      red.PrepareForBackward(true);
      at::tanh(net.l1->forward(at::randn({3, 12}))).sum().backward();  // l2 unused
      st[r] = red.Finish();
      if (st[r].ok() && (!params[2].grad().defined() || params[2].grad().abs().sum().item<double>() != 0)) {
        st[r] = absl::InternalError("unused parameter's gradient is not zero");
      }
    });
  }
  for (auto& t : ts) t.join();
  for (auto& s : st) EXPECT_TRUE(s.ok()) << s;
}

TEST(GradientReducerTest, DeadPeerFailsFinishWithDeadline) {
  comm::FakeWorld world(2, milliseconds(200));
  world.Kill(1);
  auto comm = world.Join(0);
  Net net(0);
  GradientReducer red(comm.get(), net.params(), 0);
  red.PrepareForBackward(true);
  net.forward(at::randn({2, 12})).sum().backward();
  auto s = red.Finish();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_NE(s.message().find("bucket"), std::string::npos) << s;
}

}  // namespace
}  // namespace kp::parallel

namespace kp::parallel {
namespace {

TEST(LayoutForWorldTest, KeepsTheGlobalBatch) {
  auto a = LayoutForWorld(12, 2, 1, 2);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->micro_batch, 2);
  EXPECT_EQ(a->grad_accum, 3);
  EXPECT_EQ(a->dp_rank, 1);
  auto b = LayoutForWorld(12, 4, 0, 2);  // share 6: 4 does not divide it
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->micro_batch * b->grad_accum, 6);
  EXPECT_EQ(b->micro_batch, 3);
  EXPECT_EQ(LayoutForWorld(12, 2, 0, 5).status().code(), absl::StatusCode::kInvalidArgument);
}

// Three ranks over the fake backend; rank 2 dies; the survivors' recovery
// re-forms the group and returns the layout of the same global batch.
struct RecoveryRun {
  comm::FakeWorld world{3, milliseconds(300)};
  comm::InMemoryStore store;
  std::vector<std::unique_ptr<comm::ReformableCommunicator>> comms;
  RecoveryRun() {
    for (int r = 0; r < 3; ++r) {
      comms.push_back(std::make_unique<comm::ReformableCommunicator>(world.Join(r), &store, "dp"));
    }
  }
  // Runs fn on ranks 0 and 1 after rank 2 died and their all-reduce failed.
  std::vector<absl::Status> Survivors(
      const std::function<absl::Status(int, comm::ReformableCommunicator&, absl::Status)>& fn) {
    world.Kill(2);
    std::vector<absl::Status> st(2);
    std::vector<std::thread> ts;
    for (int r = 0; r < 2; ++r) {
      ts.emplace_back([&, r] {
        at::Tensor t = at::randn({16});
        absl::Status failed = comms[r]->AllReduce(t, comm::ReduceOp::kAvg);
        st[r] = fn(r, *comms[r], failed);
      });
    }
    for (auto& t : ts) t.join();
    return st;
  }
};

ShrinkRecoveryOptions Options(const at::Tensor& weights) {
  ShrinkRecoveryOptions o;
  o.global_batch = 12;
  o.micro_batch = 2;
  o.agree.window = milliseconds(1000);
  o.params = {weights};
  return o;
}

TEST(ShrinkRecoveryTest, SurvivorsGetTheirShareOfTheSameGlobalBatch) {
  RecoveryRun run;
  at::Tensor weights = at::randn({5}, at::kDouble);  // identical replicas
  auto st = run.Survivors([&](int r, comm::ReformableCommunicator& c, absl::Status failed) {
    if (!absl::IsDeadlineExceeded(failed)) return absl::InternalError(failed.ToString());
    std::optional<DpShare> seen;
    ShrinkRecoveryOptions o = Options(weights);
    o.after_reform = [&](const DpShare& l) {
      seen = l;
      return absl::OkStatus();
    };
    ShrinkRecovery recovery(&c, o);
    KP_ASSIGN_OR_RETURN(DpShare l, recovery.Recover(7, failed));
    if (l.dp_world != 2 || l.dp_rank != r || l.micro_batch != 2 || l.grad_accum != 3 || !seen ||
        seen->grad_accum != 3) {
      return absl::InternalError(absl::StrCat("rank ", r, ": layout ", l.dp_rank, "/", l.dp_world,
                                              " x", l.grad_accum));
    }
    at::Tensor t = at::full({4}, double(r + 1), at::kDouble);
    KP_RETURN_IF_ERROR(c.AllReduce(t, comm::ReduceOp::kSum));  // the new group works
    return t[0].item<double>() == 3.0 ? absl::OkStatus() : absl::InternalError("bad sum");
  });
  for (auto& s : st) EXPECT_TRUE(s.ok()) << s;
}

TEST(ShrinkRecoveryTest, RefusesWithShardedOptimizerStateAndKeepsTheCode) {
  RecoveryRun run;
  at::Tensor weights = at::randn({5}, at::kDouble);
  auto st = run.Survivors([&](int, comm::ReformableCommunicator& c, absl::Status failed) {
    ShrinkRecoveryOptions o = Options(weights);
    o.sharded_optimizer_state = true;
    ShrinkRecovery recovery(&c, o);
    auto r = recovery.Recover(7, failed);
    if (r.status().code() != failed.code() ||
        r.status().message().find("ZeRO-1") == std::string::npos || c.generation() != 0) {
      return absl::InternalError(r.status().ToString());
    }
    // Not a peer failure: passed through untouched.
    auto other = recovery.Recover(7, absl::InvalidArgumentError("bad batch"));
    return other.status() == absl::InvalidArgumentError("bad batch")
               ? absl::OkStatus()
               : absl::InternalError(other.status().ToString());
  });
  for (auto& s : st) EXPECT_TRUE(s.ok()) << s;
}

// A survivor that already took the failed step (its all-reduce finished just
// before the peer died) cannot redo it with the others: refused.
TEST(ShrinkRecoveryTest, SurvivorsBeforeDifferentStepsAreRefused) {
  RecoveryRun run;
  at::Tensor weights = at::randn({5}, at::kDouble);
  auto st = run.Survivors([&](int r, comm::ReformableCommunicator& c, absl::Status failed) {
    ShrinkRecovery recovery(&c, Options(weights));
    auto got = recovery.Recover(7 + r, failed);
    if (got.ok() || got.status().message().find("different steps") == std::string::npos) {
      return absl::InternalError(got.status().ToString());
    }
    return absl::OkStatus();
  });
  for (auto& s : st) EXPECT_TRUE(s.ok()) << s;
}

// Replicas that drifted apart (by one ulp of one weight) cannot go on.
TEST(ShrinkRecoveryTest, SurvivorsWithDifferentWeightsAreRefused) {
  RecoveryRun run;
  at::Tensor weights = at::randn({5}, at::kFloat);
  auto st = run.Survivors([&](int r, comm::ReformableCommunicator& c, absl::Status failed) {
    at::Tensor mine = weights.clone();
    if (r == 1) mine[2] = std::nextafter(mine[2].item<float>(), 1e9f);
    ShrinkRecoveryOptions o = Options(mine);
    ShrinkRecovery recovery(&c, o);
    auto got = recovery.Recover(7, failed);
    if (got.ok() || got.status().message().find("weights differ") == std::string::npos) {
      return absl::InternalError(got.status().ToString());
    }
    return absl::OkStatus();
  });
  for (auto& s : st) EXPECT_TRUE(s.ok()) << s;
}

}  // namespace
}  // namespace kp::parallel
