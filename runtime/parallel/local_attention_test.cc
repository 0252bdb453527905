#include "runtime/parallel/local_attention.h"

#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "kernels/attention_merge.h"
#include "runtime/parallel/cp_test_util.h"

namespace kp::parallel {
namespace {

using testing::MaxAbsError;

// Reference with an explicit position mask, float64, autograd.
struct Ref {
  at::Tensor out, lse, dq, dk, dv;
};
Ref PositionalReference(const testing::AttentionProblem& p, const at::Tensor& q_pos,
                        const at::Tensor& k_pos) {
  at::Tensor q = p.q.clone().set_requires_grad(true);
  at::Tensor k = p.k.clone().set_requires_grad(true);
  at::Tensor v = p.v.clone().set_requires_grad(true);
  const int64_t g = q.size(1) / k.size(1);
  at::Tensor s = at::matmul(q, k.repeat_interleave(g, 1).transpose(-2, -1)) /
                 std::sqrt(static_cast<double>(q.size(3)));
  const at::Tensor hidden = k_pos.view({1, -1}) > q_pos.view({-1, 1});
  s = s.masked_fill(hidden, -std::numeric_limits<double>::infinity());
  const at::Tensor lse = at::logsumexp(s, -1);
  at::Tensor out = at::matmul(at::exp(s - lse.unsqueeze(-1)).nan_to_num(0.0),
                              v.repeat_interleave(g, 1));
  torch::autograd::backward({out}, {p.dout});
  return {out.detach(), lse.detach(), q.grad(), k.grad(), v.grad()};
}

at::Tensor Positions(const std::vector<Segment>& segs) {
  std::vector<at::Tensor> parts;
  for (const Segment& s : segs) parts.push_back(at::arange(s.position, s.position + s.length, at::kLong));
  return at::cat(parts);
}

struct Case {
  std::vector<Segment> q, k;
};

TEST(LocalAttention, MatchesPositionalReference) {
  at::set_num_threads(1);
  const std::vector<Case> cases = {
      {{{0, 12, 0}}, {{0, 12, 0}}},                        // plain causal
      {{{0, 4, 4}, {4, 4, 20}}, {{0, 24, 0}}},             // zigzag chunks vs gathered K/V
      {{{0, 4, 4}, {4, 4, 20}}, {{0, 4, 12}, {4, 4, 8}}},  // vs another rank's chunks
      {{{0, 6, 10}}, {{0, 8, 13}}},                        // partial overlap, first rows see none
  };
  for (bool gqa : {false, true}) {
    for (const Case& c : cases) {
      const int64_t tq = c.q.back().offset + c.q.back().length;
      const int64_t tk = c.k.back().offset + c.k.back().length;
      testing::AttentionProblem p = testing::MakeProblem(2, 4, gqa ? 2 : 4, tq, 8, 11);
      p.k = testing::MakeProblem(2, 4, gqa ? 2 : 4, tk, 8, 12).k;
      p.v = testing::MakeProblem(2, 4, gqa ? 2 : 4, tk, 8, 13).v;
      const Ref ref = PositionalReference(p, Positions(c.q), Positions(c.k));
      for (at::ScalarType dt : {at::kFloat, at::kDouble}) {
        at::Tensor q = p.q.to(dt).set_requires_grad(true);
        at::Tensor k = p.k.to(dt).set_requires_grad(true);
        at::Tensor v = p.v.to(dt).set_requires_grad(true);
        auto [out, lse] = LocalAttentionWithLse(q, k, v, c.q, c.k, LocalAttentionOptions{});
        torch::autograd::backward({out}, {p.dout.to(dt)});
        const double tol = dt == at::kDouble ? 1e-10 : 1e-5;
        EXPECT_LT(MaxAbsError(out, ref.out), tol);
        // Rows that see no key keep lse = -inf; compare the finite rows.
        const at::Tensor finite = ref.lse.isfinite();
        EXPECT_TRUE(at::equal(lse.isfinite(), finite));
        EXPECT_LT(MaxAbsError(lse.masked_select(finite), ref.lse.masked_select(finite)), tol);
        EXPECT_LT(MaxAbsError(q.grad(), ref.dq), tol) << "dq";
        EXPECT_LT(MaxAbsError(k.grad(), ref.dk), tol) << "dk";
        EXPECT_LT(MaxAbsError(v.grad(), ref.dv), tol) << "dv";
      }
    }
  }
}

// The ATen merge agrees with the kernel's CPU reference (same formula), also
// with fully masked rows and LSEs far apart.
TEST(LseMerge, AgreesWithKernelReference) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const int64_t rows = 64, dim = 16;
  const at::Tensor acc0 = at::randn({1, 1, rows, dim}, gen);
  at::Tensor acc_lse0 = at::rand({1, 1, rows}, gen) * 60 - 30;
  const at::Tensor blk = at::randn({1, 1, rows, dim}, gen);
  at::Tensor blk_lse = at::rand({1, 1, rows}, gen) * 60 - 30;
  const double inf = std::numeric_limits<double>::infinity();
  acc_lse0[0][0][0] = -inf;
  blk_lse[0][0][1] = -inf;
  acc_lse0[0][0][2] = -inf;
  blk_lse[0][0][2] = -inf;

  MergeAccumulator acc{acc0.clone(), acc_lse0.clone()};
  MergeBlock(acc, 0, blk, blk_lse);
  at::Tensor ref = acc0.clone(), ref_lse = acc_lse0.clone();
  kernels::MergeAttentionBlockReference(ref.data_ptr<float>(), ref_lse.data_ptr<float>(), dim,
                                        blk.data_ptr<float>(), blk_lse.data_ptr<float>(), dim,
                                        rows, dim);
  EXPECT_LT(MaxAbsError(acc.out, ref), 1e-6);
  EXPECT_TRUE(at::allclose(acc.lse, ref_lse, 1e-6, 1e-6, /*equal_nan=*/false) ||
              MaxAbsError(acc.lse.nan_to_num(0, 0, 0), ref_lse.nan_to_num(0, 0, 0)) < 1e-5);
  EXPECT_TRUE(std::isinf(acc.lse[0][0][2].item<float>()));
  EXPECT_FALSE(acc.out.isnan().any().item<bool>());
}

// Merging two halves of the keys equals attending to all keys at once.
TEST(LseMerge, TwoHalvesEqualWhole) {
  const testing::AttentionProblem p = testing::MakeProblem(1, 2, 2, 8, 4, 21);
  auto half = [&](int64_t off) {
    return AttentionBlockForward(p.q, p.k.narrow(2, off, 4), p.v.narrow(2, off, 4),
                                 BlockMask::kFull, 0.5, AttnBackend::kMath);
  };
  MergeAccumulator acc = MakeAccumulator(p.q);
  for (int64_t off : {0, 4}) {
    const BlockOutput b = half(off);
    MergeBlock(acc, 0, b.out, b.lse);
  }
  const BlockOutput whole = AttentionBlockForward(p.q, p.k, p.v, BlockMask::kFull, 0.5,
                                                  AttnBackend::kMath);
  EXPECT_LT(MaxAbsError(acc.out, whole.out), 1e-12);
  EXPECT_LT(MaxAbsError(acc.lse, whole.lse), 1e-12);
  // The deliberately broken merge is detectably wrong.
  MergeAccumulator bad = MakeAccumulator(p.q);
  for (int64_t off : {0, 4}) {
    const BlockOutput b = half(off);
    MergeBlock(bad, 0, b.out, b.lse, MergeMode::kBrokenForTesting);
  }
  EXPECT_GT(MaxAbsError(bad.out, whole.out), 1e-3);
}

}  // namespace
}  // namespace kp::parallel
