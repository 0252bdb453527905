// CP on one GPU (skipped without one, saying why): the fused attention blocks
// (cuDNN, flash) against the math path, the fused merge kernel against the
// ATen merge, simulated CP against one full attention call, and the fake
// communicator moving CUDA tensors, all within bf16 tolerance.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "kernels/gpu_test_util.h"
#include "runtime/parallel/cp_attention.h"
#include "runtime/parallel/cp_simulation.h"
#include "runtime/parallel/cp_test_util.h"
#include "runtime/parallel/local_attention.h"
#include "runtime/parallel/zigzag.h"

namespace kp::parallel {
namespace {

constexpr double kBf16Rel = 2e-2;  // max abs error over max |reference|

double Rel(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor w = want.to(at::kDouble).cpu();
  return (got.to(at::kDouble).cpu() - w).abs().max().item<double>() /
         std::max(w.abs().max().item<double>(), 1e-12);
}

at::Tensor Cuda(const at::Tensor& t, at::ScalarType dt = at::kBFloat16) {
  return t.to(at::Device(at::kCUDA), dt);
}

TEST(CpGpu, FusedBlocksMatchMath) {
  KP_SKIP_WITHOUT_GPU();
  for (AttnBackend backend : {AttnBackend::kCudnn, AttnBackend::kFlash}) {
    for (BlockMask mask : {BlockMask::kFull, BlockMask::kCausal}) {
      const int64_t tk = mask == BlockMask::kCausal ? 256 : 128;
      const testing::AttentionProblem p = testing::MakeProblem(2, 8, 2, 256, 64, 31);
      const at::Tensor q = Cuda(p.q), k = Cuda(p.k.narrow(2, 0, tk)),
                       v = Cuda(p.v.narrow(2, 0, tk)), dout = Cuda(p.dout);
      const double scale = 0.125;
      const BlockOutput fused = AttentionBlockForward(q, k, v, mask, scale, backend);
      const BlockOutput math =
          AttentionBlockForward(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), mask,
                                scale, AttnBackend::kMath);
      const std::string what = AttnBackendName(backend) + (mask == BlockMask::kCausal ? " causal" : " full");
      EXPECT_LT(Rel(fused.out, math.out), kBf16Rel) << what;
      EXPECT_LT(Rel(fused.lse, math.lse), 1e-2) << what;
      EXPECT_EQ(fused.lse.sizes(), math.lse.sizes()) << what;
      const BlockGrads gf =
          AttentionBlockBackward(dout, q, k, v, math.out.to(at::kBFloat16), math.lse, mask, scale,
                                 backend);
      const BlockGrads gm = AttentionBlockBackward(
          dout.to(at::kFloat), q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), math.out,
          math.lse, mask, scale, AttnBackend::kMath);
      EXPECT_LT(Rel(gf.dq, gm.dq), kBf16Rel) << what << " dq";
      EXPECT_LT(Rel(gf.dk, gm.dk), kBf16Rel) << what << " dk";
      EXPECT_LT(Rel(gf.dv, gm.dv), kBf16Rel) << what << " dv";
    }
  }
}

TEST(CpGpu, FusedMergeKernelMatchesAtenMerge) {
  KP_SKIP_WITHOUT_GPU();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(8);
  const at::Tensor acc = at::randn({2, 4, 64, 128}, gen), blk = at::randn({2, 4, 64, 128}, gen);
  at::Tensor acc_lse = at::rand({2, 4, 64}, gen) * 40 - 20;
  const at::Tensor blk_lse = at::rand({2, 4, 64}, gen) * 40 - 20;
  acc_lse[0][0][0] = -INFINITY;
  MergeAccumulator cpu{acc.clone(), acc_lse.clone()};
  MergeBlock(cpu, 0, blk.to(at::kBFloat16).to(at::kFloat), blk_lse);
  MergeAccumulator gpu{Cuda(acc, at::kFloat), Cuda(acc_lse, at::kFloat)};
  MergeBlock(gpu, 0, Cuda(blk), Cuda(blk_lse, at::kFloat));  // fused kernel path
  EXPECT_LT(testing::MaxAbsError(gpu.out.cpu(), cpu.out), 1e-5);
  EXPECT_LT(testing::MaxAbsError(gpu.lse.cpu(), cpu.lse), 1e-5);
  // A block covering rows [16, 48) only, in [B, T, H, D] memory order (as
  // cuDNN returns it): the strided kernel's addressing.
  const at::Tensor part = at::randn({2, 32, 4, 128}, gen).transpose(1, 2);
  const at::Tensor part_lse = at::rand({2, 4, 32}, gen) * 40 - 20;
  MergeBlock(cpu, 16, part.to(at::kBFloat16).to(at::kFloat), part_lse);
  MergeBlock(gpu, 16, Cuda(part), Cuda(part_lse, at::kFloat));
  EXPECT_LT(testing::MaxAbsError(gpu.out.cpu(), cpu.out), 1e-5);
  EXPECT_LT(testing::MaxAbsError(gpu.lse.cpu(), cpu.lse), 1e-5);
}

TEST(CpGpu, SimulatedCpMatchesFullAttention) {
  KP_SKIP_WITHOUT_GPU();
  const testing::AttentionProblem p = testing::MakeProblem(1, 8, 2, 1024, 128, 41);
  // One full causal call, same backend (cuDNN), as the single-GPU reference.
  at::Tensor q = Cuda(p.q).set_requires_grad(true), k = Cuda(p.k).set_requires_grad(true),
             v = Cuda(p.v).set_requires_grad(true);
  LocalAttentionOptions options;
  options.backend = AttnBackend::kCudnn;
  at::Tensor out = std::get<0>(CausalAttentionWithLse(q, k, v, options));
  torch::autograd::backward({out}, {Cuda(p.dout)});
  for (int cp : {2, 4, 8}) {
    std::vector<at::Tensor> qs, ks, vs, ds;
    for (int r = 0; r < cp; ++r) {
      qs.push_back(*ZigzagShard(q.detach(), 2, cp, r));
      ks.push_back(*ZigzagShard(k.detach(), 2, cp, r));
      vs.push_back(*ZigzagShard(v.detach(), 2, cp, r));
      ds.push_back(*ZigzagShard(Cuda(p.dout), 2, cp, r));
    }
    const SimulatedRanks sim = SimulateRingAttention(qs, ks, vs, ds, options);
    EXPECT_LT(Rel(*ZigzagUnshard(sim.out, 2), out), kBf16Rel) << "cp " << cp;
    EXPECT_LT(Rel(*ZigzagUnshard(sim.dq, 2), q.grad()), kBf16Rel) << "cp " << cp;
    EXPECT_LT(Rel(*ZigzagUnshard(sim.dk, 2), k.grad()), kBf16Rel) << "cp " << cp;
    EXPECT_LT(Rel(*ZigzagUnshard(sim.dv, 2), v.grad()), kBf16Rel) << "cp " << cp;
  }
}

TEST(CpGpu, FakeCommunicatorMovingCudaTensors) {
  KP_SKIP_WITHOUT_GPU();
  const int cp = 2;
  const testing::AttentionProblem p = testing::MakeProblem(1, 8, 2, 512, 64, 51);
  const testing::AttentionResult ref = testing::ReferenceAttention(p, true);
  for (CpMode mode : {CpMode::kRing, CpMode::kAllGather, CpMode::kUlysses}) {
    std::vector<at::Tensor> out(cp), dq(cp), dk(cp), dv(cp);
    testing::RunRanks(cp, [&](int rank, comm::Communicator& comm) {
      auto shard = [&](const at::Tensor& t) { return Cuda(*ZigzagShard(t, 2, cp, rank)); };
      CpOptions options;
      options.mode = mode;
      // Without autograd: its single CUDA device thread would serialize the
      // in-process ranks, which exchange data inside their backward.
      auto r = ContextParallelAttentionForwardBackward(shard(p.q), shard(p.k), shard(p.v),
                                                       shard(p.dout), &comm, options);
      if (!r.ok()) {
        ADD_FAILURE() << r.status();
        return;
      }
      out[rank] = r->out.cpu();
      dq[rank] = r->dq.cpu();
      dk[rank] = r->dk.cpu();
      dv[rank] = r->dv.cpu();
    });
    ASSERT_TRUE(out[0].defined() && out[1].defined());
    EXPECT_LT(Rel(*ZigzagUnshard(out, 2), ref.out), kBf16Rel) << CpModeName(mode);
    EXPECT_LT(Rel(*ZigzagUnshard(dq, 2), ref.dq), kBf16Rel) << CpModeName(mode);
    EXPECT_LT(Rel(*ZigzagUnshard(dk, 2), ref.dk), kBf16Rel) << CpModeName(mode);
    EXPECT_LT(Rel(*ZigzagUnshard(dv, 2), ref.dv), kBf16Rel) << CpModeName(mode);
  }
}

}  // namespace
}  // namespace kp::parallel
