// CP attention through the engine's Attention seam against the engine's own
// local attention on the whole sequence.
#include "runtime/parallel/cp_engine_attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "runtime/parallel/cp_test_util.h"
#include "runtime/parallel/zigzag.h"

namespace kp::parallel {
namespace {

TEST(CpEngineAttention, MatchesEngineLocalAttention) {
  at::set_num_threads(1);
  const int cp = 4;
  const testing::AttentionProblem p = testing::MakeProblem(2, 4, 2, 64, 8, 17);
  const testing::AttentionResult ref = testing::ReferenceAttention(p, true);
  std::vector<at::Tensor> out(cp), dq(cp), dk(cp), dv(cp);
  testing::RunRanks(cp, [&](int rank, comm::Communicator& comm) {
    auto attention = MakeContextParallelAttention(&comm, CpOptions{});
    engine::AttentionContext ctx;
    ctx.layout = engine::SequenceLayout::kZigzag;
    ctx.cp_rank = rank;
    ctx.cp_size = cp;
    ctx.global_seq_len = 64;
    ctx.positions = ZigzagPositions(64, cp, rank);
    auto shard = [&](const at::Tensor& t) { return *ZigzagShard(t, 2, cp, rank); };
    at::Tensor q = shard(p.q).set_requires_grad(true), k = shard(p.k).set_requires_grad(true),
               v = shard(p.v).set_requires_grad(true);
    at::Tensor o = attention->Forward(q, k, v, ctx);
    torch::autograd::backward({o}, {shard(p.dout)});
    out[rank] = o.detach();
    dq[rank] = q.grad();
    dk[rank] = k.grad();
    dv[rank] = v.grad();
  });
  EXPECT_LT(testing::MaxAbsError(*ZigzagUnshard(out, 2), ref.out), 1e-10);
  EXPECT_LT(testing::MaxAbsError(*ZigzagUnshard(dq, 2), ref.dq), 1e-10);
  EXPECT_LT(testing::MaxAbsError(*ZigzagUnshard(dk, 2), ref.dk), 1e-10);
  EXPECT_LT(testing::MaxAbsError(*ZigzagUnshard(dv, 2), ref.dv), 1e-10);
}

TEST(CpEngineAttention, CpOneIsTheEngineLocalAttention) {
  const testing::AttentionProblem p = testing::MakeProblem(1, 4, 2, 16, 8, 3);
  engine::AttentionContext ctx;
  const at::Tensor got = MakeContextParallelAttention(nullptr, CpOptions{})->Forward(p.q, p.k, p.v, ctx);
  const at::Tensor want = engine::MakeLocalAttention()->Forward(p.q, p.k, p.v, ctx);
  EXPECT_TRUE(at::equal(got, want));
}

TEST(CpEngineAttention, RejectsAWrongLayout) {
  testing::RunRanks(2, [&](int rank, comm::Communicator& comm) {
    engine::AttentionContext ctx;
    ctx.layout = engine::SequenceLayout::kContiguous;
    ctx.cp_rank = rank;
    ctx.cp_size = 2;
    ctx.global_seq_len = 16;
    absl::Status st = ValidateCpAttentionContext(ctx, &comm);
    EXPECT_NE(st.message().find("zigzag layout"), std::string::npos) << st;
    ctx.layout = engine::SequenceLayout::kZigzag;
    ctx.positions = at::arange(rank * 8, rank * 8 + 8, at::kLong);  // contiguous positions
    st = ValidateCpAttentionContext(ctx, &comm);
    EXPECT_NE(st.message().find("do not match the zigzag layout"), std::string::npos) << st;
    ctx.positions = ZigzagPositions(16, 2, rank);
    EXPECT_TRUE(ValidateCpAttentionContext(ctx, &comm).ok());
    ctx.cp_size = 4;
    EXPECT_FALSE(ValidateCpAttentionContext(ctx, &comm).ok());
    // Forward refuses with the same message.
    ctx.layout = engine::SequenceLayout::kContiguous;
    ctx.cp_size = 2;
    auto attention = MakeContextParallelAttention(&comm, CpOptions{});
    const at::Tensor x = at::randn({1, 2, 8, 4});
    EXPECT_THROW(attention->Forward(x, x, x, ctx), c10::Error);
  });
}

}  // namespace
}  // namespace kp::parallel
