#include "runtime/parallel/zero1.h"

#include <ATen/ATen.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adamw.h>

#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "runtime/comm/fake_communicator.h"
#include "runtime/parallel/data_parallel.h"
#include "runtime/parallel/dp_test_model.h"

namespace kp::parallel {
namespace {

using std::chrono::milliseconds;
using namespace dptest;  // NOLINT

constexpr double kLrs[kSteps] = {1e-2, 5e-3, 2e-3};

// Bias terms without decay, as an engine's no-decay group would.
std::vector<bool> DecayMask() { return {true, false, true, false}; }

std::vector<at::Tensor> TrainReference() {
  Net net(0);
  auto params = net.params();
  torch::optim::AdamWOptions wd(kLrs[0]);
  wd.weight_decay(0.1);
  torch::optim::AdamWOptions nd(kLrs[0]);
  nd.weight_decay(0.0);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<at::Tensor>{params[0], params[2]},
                      std::make_unique<torch::optim::AdamWOptions>(wd));
  groups.emplace_back(std::vector<at::Tensor>{params[1], params[3]},
                      std::make_unique<torch::optim::AdamWOptions>(nd));
  torch::optim::AdamW opt(std::move(groups));
  for (int step = 0; step < kSteps; ++step) {
    for (auto& g : opt.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(g.options()).lr(kLrs[step]);
    }
    opt.zero_grad();
    at::Tensor x = Data(step, false), y = Data(step, true);
    torch::nn::functional::mse_loss(net.forward(x), y).backward();
    opt.step();
  }
  std::vector<at::Tensor> out;
  for (auto& p : params) out.push_back(p.detach().clone());
  return out;
}

absl::Status TrainSharded(comm::Communicator& comm, const std::vector<at::Tensor>& want) {
  Net net(comm.rank());  // different inits: the broadcast must fix them
  auto params = net.params();
  GradientReducer reducer(&comm, params, 1024);
  KP_RETURN_IF_ERROR(reducer.BroadcastParameters(0));
  AdamWOptions o;
  o.weight_decay = 0.1;
  ShardedAdamW opt(&comm, params, o, DecayMask());
  if (opt.exp_avg().numel() * comm.size() < opt.total_numel() ||
      (comm.size() > 1 && opt.exp_avg().numel() >= opt.total_numel())) {
    return absl::InternalError("optimizer state is not sharded");
  }
  const int rows = kGlobalBatch / comm.size();
  for (int step = 0; step < kSteps; ++step) {
    for (auto& p : params) p.mutable_grad() = at::Tensor();
    reducer.PrepareForBackward(true);
    at::Tensor x = Data(step, false).narrow(0, comm.rank() * rows, rows);
    at::Tensor y = Data(step, true).narrow(0, comm.rank() * rows, rows);
    torch::nn::functional::mse_loss(net.forward(x), y).backward();
    KP_RETURN_IF_ERROR(reducer.Finish());
    KP_RETURN_IF_ERROR(opt.Step(kLrs[step]));
  }
  for (size_t i = 0; i < params.size(); ++i) {
    const double err = (params[i].detach() - want[i]).abs().max().item<double>();
    const double scale = want[i].abs().max().item<double>();
    if (err > kRelTol * scale) {
      return absl::InternalError(absl::StrCat("rank ", comm.rank(), " param ", i, ": error ", err,
                                              " vs scale ", scale));
    }
  }
  return absl::OkStatus();
}

class Zero1Test : public ::testing::TestWithParam<int> {};

TEST_P(Zero1Test, EqualsTorchAdamWOnOneProcess) {
  const auto want = TrainReference();
  Net init(0);
  ASSERT_FALSE(at::allclose(init.params()[0], want[0])) << "reference did not train";
  const int n = GetParam();
  comm::FakeWorld world(n, milliseconds(10000));
  std::vector<absl::Status> st(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      auto c = world.Join(r);
      st[r] = TrainSharded(*c, want);
    });
  }
  for (auto& t : threads) t.join();
  for (auto& s : st) EXPECT_TRUE(s.ok()) << s;
}

// 1: no sharding; the flat vector (581 floats) needs padding for 2, 4 and 8.
INSTANTIATE_TEST_SUITE_P(Sizes, Zero1Test, ::testing::Values(1, 2, 4, 8));

}  // namespace
}  // namespace kp::parallel
