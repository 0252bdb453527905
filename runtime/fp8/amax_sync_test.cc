#include "runtime/fp8/amax_sync.h"

#include <functional>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "runtime/comm/fake_communicator.h"

namespace kp::fp8 {
namespace {

// One FP8 layer in a CPU-emulated session with a 4-step history; every rank
// draws the same weights (generator seed 5), as replicas do.
struct OneLayer {
  std::shared_ptr<Fp8Session> session;
  std::shared_ptr<Fp8Linear> layer;
  int64_t in, out;

  OneLayer(const std::string& name, int64_t in_features, int64_t out_features)
      : in(in_features), out(out_features) {
    Fp8Options o;
    o.allow_cpu_emulation = true;
    o.amax_history_len = 4;
    session = *Fp8Session::Create(o, CpuDevice());
    engine::LinearContext ctx;
    ctx.generator = at::detail::createCPUGenerator(5);
    engine::LinearSpec spec;
    spec.name = name;
    spec.in_features = in;
    spec.out_features = out;
    layer = std::dynamic_pointer_cast<Fp8Linear>(session->Create(spec, ctx));
  }

  // One forward + backward on 16 random tokens and a random output gradient
  // (seeded), scaled so that ranks see different ranges.
  void ForwardBackward(uint64_t seed, double x_scale, double grad_scale) {
    at::Generator g = at::detail::createCPUGenerator(seed);
    const at::Tensor x = (at::randn({16, in}, g) * x_scale).requires_grad_(true);
    torch::autograd::backward({layer->Forward(x)}, {at::randn({16, out}, g) * grad_scale});
  }
};

// Runs rank_main(rank, comm) for every rank of an in-process world, each on
// its own thread.
void OnRanks(int n, const std::function<void(int, comm::Communicator&)>& rank_main) {
  comm::FakeWorld world(n, std::chrono::seconds(20));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] { rank_main(r, *world.Join(r)); });
  }
  for (auto& t : threads) t.join();
}

// Two data-parallel ranks (threads over the in-process communicator) with
// different batches end every step with the same amaxes and, from the next
// step on, the same scales.
TEST(Fp8AmaxSync, RanksAgreeOnAmaxAndScales) {
  constexpr int kRanks = 2;
  std::vector<at::Tensor> scales(kRanks), amax_before(kRanks), amax_after(kRanks);
  std::vector<absl::Status> status(kRanks);
  OnRanks(kRanks, [&](int rank, comm::Communicator& comm) {
    OneLayer one("blocks.0.attn.qkv", 32, 48);
    Fp8Linear& layer = *one.layer;
    for (int step = 0; step < 3 && status[rank].ok(); ++step) {
      one.ForwardBackward(100 * rank + step, 1 + rank, 1 + 2 * rank);
      if (step == 2) amax_before[rank] = layer.state().amax_history.select(1, 0).clone();
      status[rank] = AllReduceAmax(*one.session, comm);
    }
    amax_after[rank] = layer.state().amax_history.select(1, 0).clone();
    layer.EndStep();
    scales[rank] = layer.state().scale.clone();
  });
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
  std::vector<at::Tensor> before(kRanks), after(kRanks);
  std::vector<absl::Status> status(kRanks);
  OnRanks(kRanks, [&](int rank, comm::Communicator& comm) {
    OneLayer one("blocks.0.mlp.down", 32, 16);
    Fp8Linear& layer = *one.layer;
    for (int micro = 0; micro < 2; ++micro) {  // one step, two micro-batches
      one.ForwardBackward(10 * rank + micro, 1 + rank, 1 + rank);
    }
    before[rank] = layer.state().amax_history.clone();
    status[rank] = AllReduceAmax(*one.session, comm);
    after[rank] = layer.state().amax_history.clone();
  });
  for (int r = 0; r < kRanks; ++r) ASSERT_TRUE(status[r].ok()) << status[r];
  // The first micro-batch's column (1) differed between the ranks.
  EXPECT_FALSE(at::equal(before[0].select(1, 1), before[1].select(1, 1)));
  EXPECT_TRUE(at::equal(after[0], after[1]));
  EXPECT_TRUE(at::equal(after[0], at::maximum(before[0], before[1])));
}

}  // namespace
}  // namespace kp::fp8
