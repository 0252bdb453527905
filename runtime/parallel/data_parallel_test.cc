#include "runtime/parallel/data_parallel.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/nn/modules/linear.h>

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
