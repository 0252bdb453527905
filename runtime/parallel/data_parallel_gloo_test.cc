// Real processes over Gloo. The parent process never runs torch code before
// fork() (a forked child of a process with a live OpenMP pool can hang).
#include "runtime/parallel/data_parallel.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/nn/modules/linear.h>

#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "runtime/comm/gloo_communicator.h"
#include "runtime/comm/multiprocess.h"
#include "runtime/comm/store.h"
#include "runtime/parallel/dp_test_model.h"

namespace kp::parallel {
namespace {

using std::chrono::milliseconds;
using namespace dptest;  // NOLINT

struct Case {
  int world;
  int micro;
  size_t bucket_bytes;
};

class GlooDataParallel : public ::testing::TestWithParam<Case> {};

// Real processes over Gloo; rank r starts from seed r, so the broadcast from
// rank 0 matters.
TEST_P(GlooDataParallel, EqualsOneProcessWithSameGlobalBatch) {
  const Case c = GetParam();
  const std::string dir = comm::testing::FreshDir("dp");
  auto st = comm::testing::RunProcesses(c.world, [&](int rank) -> absl::Status {
    comm::FileStore store(dir);
    comm::GlooOptions o;
    o.timeout = milliseconds(20000);
    KP_ASSIGN_OR_RETURN(auto comm, comm::CreateGlooCommunicator(rank, c.world, &store, o));
    auto got = Train(comm.get(), /*init_seed=*/rank, c.micro, c.bucket_bytes);
    return CompareToSingleProcess(got, c.micro);
  });
  for (int r = 0; r < c.world; ++r) EXPECT_TRUE(st[r].ok()) << st[r];
}

INSTANTIATE_TEST_SUITE_P(Layouts, GlooDataParallel,
                         ::testing::Values(Case{2, 1, 1024}, Case{4, 1, 1024}, Case{2, 2, 0},
                                           Case{4, 2, 25u << 20}));

// Communication overlaps backward: with one bucket per layer of a deep MLP,
// the first buckets start before loss.backward() returns.
TEST(GradientReducerTest, BucketsLaunchDuringBackward) {
  const std::string dir = comm::testing::FreshDir("dp_overlap");
  auto st = comm::testing::RunProcesses(2, [&](int rank) -> absl::Status {
    comm::FileStore store(dir);
    comm::GlooOptions o;
    o.timeout = milliseconds(20000);
    KP_ASSIGN_OR_RETURN(auto comm, comm::CreateGlooCommunicator(rank, 2, &store, o));
    torch::manual_seed(0);
    std::vector<torch::nn::Linear> layers;
    std::vector<at::Tensor> params;
    for (int l = 0; l < 6; ++l) {
      layers.emplace_back(256, 256);
      for (auto& p : layers.back()->parameters()) params.push_back(p);
    }
    GradientReducer red(comm.get(), params, 256 * 256 * 4);
    red.PrepareForBackward(true);
    at::Tensor h = at::randn({64, 256});
    for (auto& l : layers) h = at::tanh(l->forward(h));
    h.pow(2).sum().backward();
    const auto backward_done = std::chrono::steady_clock::now();
    const int during = red.buckets_launched_in_backward();
    KP_RETURN_IF_ERROR(red.Finish());
    const auto times = red.bucket_launch_times();
    if (during < 1 || !(times[0] < backward_done)) {
      return absl::InternalError(absl::StrCat("only ", during, " of ", red.num_buckets(),
                                              " buckets started during backward"));
    }
    return absl::OkStatus();
  });
  for (auto& s : st) EXPECT_TRUE(s.ok()) << s;
}

}  // namespace
}  // namespace kp::parallel
