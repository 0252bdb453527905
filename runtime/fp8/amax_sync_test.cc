#include "runtime/fp8/amax_sync.h"

#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "runtime/comm/fake_communicator.h"

namespace kp::fp8 {
namespace {

// Two data-parallel ranks (threads over the in-process communicator) with
// different batches end every step with the same amaxes and, from the next
// step on, the same scales.
TEST(Fp8AmaxSync, RanksAgreeOnAmaxAndScales) {
  constexpr int kRanks = 2;
  comm::FakeWorld world(kRanks, std::chrono::seconds(20));
  std::vector<at::Tensor> scales(kRanks), amax_before(kRanks), amax_after(kRanks);
  std::vector<absl::Status> status(kRanks);
  auto rank_main = [&](int rank) {
    std::unique_ptr<comm::Communicator> comm = world.Join(rank);
    Fp8Options o;
    o.allow_cpu_emulation = true;
    o.amax_history_len = 4;
    auto session = *Fp8Session::Create(o, CpuDevice());
    engine::LinearContext ctx;
    ctx.generator = at::detail::createCPUGenerator(5);  // replicated weights
    engine::LinearSpec spec;
    spec.name = "blocks.0.attn.qkv";
    spec.in_features = 32;
    spec.out_features = 48;
    auto layer = std::dynamic_pointer_cast<Fp8Linear>(session->Create(spec, ctx));
    for (int step = 0; step < 3 && status[rank].ok(); ++step) {
      at::Generator g = at::detail::createCPUGenerator(100 * rank + step);
      const at::Tensor x = (at::randn({16, 32}, g) * (1 + rank)).requires_grad_(true);
      torch::autograd::backward({layer->Forward(x)}, {at::randn({16, 48}, g) * (1 + 2 * rank)});
      if (step == 2) amax_before[rank] = layer->state().amax_history.select(1, 0).clone();
      status[rank] = AllReduceAmax(*session, *comm);
    }
    amax_after[rank] = layer->state().amax_history.select(1, 0).clone();
    layer->EndStep();
    scales[rank] = layer->state().scale.clone();
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r) threads.emplace_back(rank_main, r);
  for (auto& t : threads) t.join();
  for (int r = 0; r < kRanks; ++r) ASSERT_TRUE(status[r].ok()) << status[r];
  EXPECT_FALSE(at::equal(amax_before[0], amax_before[1]));  // the ranks did differ
  EXPECT_TRUE(at::equal(amax_after[0], at::maximum(amax_before[0], amax_before[1])));
  EXPECT_TRUE(at::equal(amax_after[0], amax_after[1]));
  EXPECT_TRUE(at::equal(scales[0], scales[1]));
}

// Gradient accumulation: the history rolls once per micro-batch, so a step
// of two micro-batches leaves its first micro-batch's amaxes in column 1.
// After the step's reduction every column agrees across ranks.
TEST(Fp8AmaxSync, MicroBatchColumnsAgreeToo) {
  constexpr int kRanks = 2;
  comm::FakeWorld world(kRanks, std::chrono::seconds(20));
  std::vector<at::Tensor> before(kRanks), after(kRanks);
  std::vector<absl::Status> status(kRanks);
  auto rank_main = [&](int rank) {
    std::unique_ptr<comm::Communicator> comm = world.Join(rank);
    Fp8Options o;
    o.allow_cpu_emulation = true;
    o.amax_history_len = 4;
    auto session = *Fp8Session::Create(o, CpuDevice());
    engine::LinearContext ctx;
    ctx.generator = at::detail::createCPUGenerator(5);
    engine::LinearSpec spec;
    spec.name = "blocks.0.mlp.down";
    spec.in_features = 32;
    spec.out_features = 16;
    auto layer = std::dynamic_pointer_cast<Fp8Linear>(session->Create(spec, ctx));
    for (int micro = 0; micro < 2; ++micro) {  // one step, two micro-batches
      at::Generator g = at::detail::createCPUGenerator(10 * rank + micro);
      const at::Tensor x = (at::randn({16, 32}, g) * (1 + rank)).requires_grad_(true);
      torch::autograd::backward({layer->Forward(x)}, {at::randn({16, 16}, g) * (1 + rank)});
    }
    before[rank] = layer->state().amax_history.clone();
    status[rank] = AllReduceAmax(*session, *comm);
    after[rank] = layer->state().amax_history.clone();
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r) threads.emplace_back(rank_main, r);
  for (auto& t : threads) t.join();
  for (int r = 0; r < kRanks; ++r) ASSERT_TRUE(status[r].ok()) << status[r];
  // The first micro-batch's column (1) differed between the ranks.
  EXPECT_FALSE(at::equal(before[0].select(1, 1), before[1].select(1, 1)));
  EXPECT_TRUE(at::equal(after[0], after[1]));
  EXPECT_TRUE(at::equal(after[0], at::maximum(before[0], before[1])));
}

}  // namespace
}  // namespace kp::fp8
