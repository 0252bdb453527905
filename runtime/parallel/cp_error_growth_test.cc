// How the error of float32 context-parallel attention against float64 grows
// with the ring size (users of other ring implementations report backward
// errors growing with N). Prints one JSON line per (mode, N) and asserts the
// error stays flat: at N = 16 within 4x of N = 1 (plain local attention).
#include <cstdio>
#include <map>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "runtime/parallel/cp_attention.h"
#include "runtime/parallel/cp_test_util.h"
#include "runtime/parallel/zigzag.h"

namespace kp::parallel {
namespace {

using testing::AttentionProblem;
using testing::AttentionResult;

// Max error relative to the reference's largest magnitude, per tensor.
struct Errors {
  double out = 0, dq = 0, dk = 0, dv = 0;
  double bwd() const { return std::max({dq, dk, dv}); }
};

double Rel(const at::Tensor& got, const at::Tensor& want) {
  return testing::MaxAbsError(got, want) / want.abs().max().item<double>();
}

Errors Measure(const AttentionProblem& p, const AttentionResult& ref, int cp, CpMode mode) {
  std::vector<at::Tensor> out(cp), dq(cp), dk(cp), dv(cp);
  testing::RunRanks(cp, [&](int rank, comm::Communicator& comm) {
    auto shard = [&](const at::Tensor& t) { return *ZigzagShard(t.to(at::kFloat), 2, cp, rank); };
    at::Tensor q = shard(p.q).set_requires_grad(true);
    at::Tensor k = shard(p.k).set_requires_grad(true);
    at::Tensor v = shard(p.v).set_requires_grad(true);
    CpOptions options;
    options.mode = mode;
    at::Tensor o = *ContextParallelAttention(q, k, v, &comm, options);
    torch::autograd::backward({o}, {shard(p.dout)});
    out[rank] = o.detach();
    dq[rank] = q.grad();
    dk[rank] = k.grad();
    dv[rank] = v.grad();
  });
  return {Rel(*ZigzagUnshard(out, 2), ref.out), Rel(*ZigzagUnshard(dq, 2), ref.dq),
          Rel(*ZigzagUnshard(dk, 2), ref.dk), Rel(*ZigzagUnshard(dv, 2), ref.dv)};
}

TEST(CpErrorGrowth, BackwardErrorStaysFlatWithRingSize) {
  at::set_num_threads(1);
  // 512 tokens: divisible by 2 * 16; 4 heads over 2 kv heads (GQA).
  const AttentionProblem p = testing::MakeProblem(1, 4, 2, 512, 32, 2026);
  const AttentionResult ref = testing::ReferenceAttention(p, true);
  for (CpMode mode : {CpMode::kRing, CpMode::kAllGather}) {
    std::map<int, Errors> by_n;
    for (int cp : {1, 2, 4, 8, 16}) {
      const Errors e = Measure(p, ref, cp, mode);
      by_n[cp] = e;
      std::printf(
          "{\"test\": \"cp_error_growth\", \"mode\": \"%s\", \"cp\": %d, \"rel_err_out\": %.3e, "
          "\"rel_err_dq\": %.3e, \"rel_err_dk\": %.3e, \"rel_err_dv\": %.3e}\n",
          CpModeName(mode).c_str(), cp, e.out, e.dq, e.dk, e.dv);
    }
    std::printf("{\"name\": \"cp_bwd_rel_error_n16\", \"mode\": \"%s\", \"value\": %.3e}\n",
                CpModeName(mode).c_str(), by_n[16].bwd());
    for (int cp : {2, 4, 8, 16}) {
      EXPECT_LT(by_n[cp].bwd(), 4 * by_n[1].bwd() + 1e-7) << CpModeName(mode) << " cp " << cp;
      EXPECT_LT(by_n[cp].out, 4 * by_n[1].out + 1e-7) << CpModeName(mode) << " cp " << cp;
    }
    EXPECT_LT(by_n[16].bwd(), 1e-5);
  }
}

}  // namespace
}  // namespace kp::parallel
