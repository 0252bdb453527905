// Context-parallel attention against a float64 reference of full attention
// over the whole sequence: every mode x cp in {2, 4} x (GQA, MHA) x (float32,
// float64), forward and backward, on in-process ranks.
#include "runtime/parallel/cp_attention.h"

#include <mutex>
#include <string>
#include <tuple>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "runtime/comm/fake_communicator.h"
#include "runtime/parallel/cp_test_util.h"
#include "runtime/parallel/local_attention.h"
#include "runtime/parallel/zigzag.h"

namespace kp::parallel {
namespace {

using testing::AttentionProblem;
using testing::AttentionResult;
using testing::MaxAbsError;

struct CpRun {
  at::Tensor out, dq, dk, dv;  // full sequence, natural order (unsharded)
};

// Every rank takes its zigzag shard of the same problem, runs CP attention
// and its backward; the shards are put back together.
CpRun RunCp(const AttentionProblem& p, int cp, const CpOptions& options, at::ScalarType dtype) {
  std::vector<at::Tensor> out(cp), dq(cp), dk(cp), dv(cp);
  std::vector<std::string> errors(cp);
  testing::RunRanks(cp, [&](int rank, comm::Communicator& comm) {
    auto shard = [&](const at::Tensor& t) { return *ZigzagShard(t.to(dtype), 2, cp, rank); };
    at::Tensor q = shard(p.q).set_requires_grad(true);
    at::Tensor k = shard(p.k).set_requires_grad(true);
    at::Tensor v = shard(p.v).set_requires_grad(true);
    absl::StatusOr<at::Tensor> o = ContextParallelAttention(q, k, v, &comm, options);
    if (!o.ok()) {
      errors[rank] = o.status().ToString();
      return;
    }
    torch::autograd::backward({*o}, {shard(p.dout)});
    out[rank] = o->detach();
    dq[rank] = q.grad();
    dk[rank] = k.grad();
    dv[rank] = v.grad();
  });
  for (int r = 0; r < cp; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
  if (!errors[0].empty()) return {};
  return {*ZigzagUnshard(out, 2), *ZigzagUnshard(dq, 2), *ZigzagUnshard(dk, 2),
          *ZigzagUnshard(dv, 2)};
}

using Param = std::tuple<CpMode, int /*cp*/, bool /*gqa*/, at::ScalarType>;

class CpAttentionTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override { at::set_num_threads(1); }
};

TEST_P(CpAttentionTest, MatchesFullAttentionForwardAndBackward) {
  const auto [mode, cp, gqa, dtype] = GetParam();
  // 4 heads so Ulysses divides at cp 4; 2 kv heads: at cp 4 Ulysses expands.
  const AttentionProblem p = testing::MakeProblem(2, 4, gqa ? 2 : 4, 16 * cp, 8, 1234 + cp);
  const AttentionResult ref = testing::ReferenceAttention(p, /*causal=*/true);
  CpOptions options;
  options.mode = mode;
  const CpRun got = RunCp(p, cp, options, dtype);
  ASSERT_TRUE(got.out.defined());
  const double tol = dtype == at::kDouble ? 1e-10 : 1e-5;
  EXPECT_LT(MaxAbsError(got.out, ref.out), tol) << "out";
  EXPECT_LT(MaxAbsError(got.dq, ref.dq), tol) << "dq";
  EXPECT_LT(MaxAbsError(got.dk, ref.dk), tol) << "dk";
  EXPECT_LT(MaxAbsError(got.dv, ref.dv), tol) << "dv";
  EXPECT_EQ(got.out.scalar_type(), dtype);
  EXPECT_EQ(got.dk.scalar_type(), dtype);
}

std::string Name(const ::testing::TestParamInfo<Param>& info) {
  const auto [mode, cp, gqa, dtype] = info.param;
  return CpModeName(mode) + "_cp" + std::to_string(cp) + (gqa ? "_gqa" : "_mha") +
         (dtype == at::kDouble ? "_f64" : "_f32");
}

INSTANTIATE_TEST_SUITE_P(
    Modes, CpAttentionTest,
    ::testing::Combine(::testing::Values(CpMode::kRing, CpMode::kAllGather, CpMode::kUlysses),
                       ::testing::Values(2, 4), ::testing::Bool(),
                       ::testing::Values(at::kFloat, at::kDouble)),
    Name);

// The autograd-free entry point computes the same forward and backward.
TEST(CpAttention, ForwardBackwardWithoutAutogradMatches) {
  at::set_num_threads(1);
  for (bool gqa : {false, true}) {
    for (int cp : {2, 4}) {
      const AttentionProblem p = testing::MakeProblem(1, 4, gqa ? 2 : 4, 16 * cp, 8, 300 + cp);
      const AttentionResult ref = testing::ReferenceAttention(p, true);
      for (CpMode mode : {CpMode::kRing, CpMode::kAllGather, CpMode::kUlysses}) {
        std::vector<at::Tensor> out(cp), dq(cp), dk(cp), dv(cp);
        testing::RunRanks(cp, [&](int rank, comm::Communicator& comm) {
          auto shard = [&](const at::Tensor& t) { return *ZigzagShard(t, 2, cp, rank); };
          CpOptions options;
          options.mode = mode;
          auto r = ContextParallelAttentionForwardBackward(shard(p.q), shard(p.k), shard(p.v),
                                                           shard(p.dout), &comm, options);
          ASSERT_TRUE(r.ok()) << r.status();
          out[rank] = r->out;
          dq[rank] = r->dq;
          dk[rank] = r->dk;
          dv[rank] = r->dv;
        });
        const std::string what = CpModeName(mode) + " cp " + std::to_string(cp) + (gqa ? " gqa" : "");
        ASSERT_TRUE(out[0].defined()) << what;
        EXPECT_LT(MaxAbsError(*ZigzagUnshard(out, 2), ref.out), 1e-10) << what;
        EXPECT_LT(MaxAbsError(*ZigzagUnshard(dq, 2), ref.dq), 1e-10) << what;
        EXPECT_LT(MaxAbsError(*ZigzagUnshard(dk, 2), ref.dk), 1e-10) << what;
        EXPECT_LT(MaxAbsError(*ZigzagUnshard(dv, 2), ref.dv), 1e-10) << what;
      }
    }
  }
  // cp = 1 through the same entry point.
  const AttentionProblem p = testing::MakeProblem(1, 4, 2, 16, 8, 9);
  const AttentionResult ref = testing::ReferenceAttention(p, true);
  auto r = ContextParallelAttentionForwardBackward(p.q, p.k, p.v, p.dout, nullptr, CpOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(MaxAbsError(r->dk, ref.dk), 1e-10);
}

TEST(CpAttention, NonCausalMatchesFullAttention) {
  at::set_num_threads(1);
  const AttentionProblem p = testing::MakeProblem(1, 4, 2, 32, 8, 99);
  const AttentionResult ref = testing::ReferenceAttention(p, /*causal=*/false);
  for (CpMode mode : {CpMode::kRing, CpMode::kAllGather, CpMode::kUlysses}) {
    CpOptions options;
    options.mode = mode;
    options.causal = false;
    const CpRun got = RunCp(p, 2, options, at::kDouble);
    ASSERT_TRUE(got.out.defined());
    EXPECT_LT(MaxAbsError(got.out, ref.out), 1e-10) << CpModeName(mode);
    EXPECT_LT(MaxAbsError(got.dq, ref.dq), 1e-10) << CpModeName(mode);
    EXPECT_LT(MaxAbsError(got.dk, ref.dk), 1e-10) << CpModeName(mode);
    EXPECT_LT(MaxAbsError(got.dv, ref.dv), 1e-10) << CpModeName(mode);
  }
}

TEST(CpAttention, AutoModeRunsAndMatches) {
  at::set_num_threads(1);
  const AttentionProblem p = testing::MakeProblem(1, 4, 1, 32, 8, 7);
  const AttentionResult ref = testing::ReferenceAttention(p, true);
  const CpRun got = RunCp(p, 4, CpOptions{}, at::kDouble);
  ASSERT_TRUE(got.out.defined());
  EXPECT_LT(MaxAbsError(got.out, ref.out), 1e-10);
  EXPECT_LT(MaxAbsError(got.dk, ref.dk), 1e-10);
}

// cp = 1 is the local attention call itself: bitwise equal, gradients too.
TEST(CpAttention, CpOneIsLocalAttentionExactly) {
  at::set_num_threads(1);
  const AttentionProblem p = testing::MakeProblem(2, 4, 2, 24, 8, 5);
  auto run = [&](bool through_cp) {
    at::Tensor q = p.q.to(at::kFloat).set_requires_grad(true);
    at::Tensor k = p.k.to(at::kFloat).set_requires_grad(true);
    at::Tensor v = p.v.to(at::kFloat).set_requires_grad(true);
    at::Tensor out;
    if (through_cp) {
      testing::RunRanks(1, [&](int, comm::Communicator& comm) {
        out = *ContextParallelAttention(q, k, v, &comm, CpOptions{});
      });
    } else {
      out = std::get<0>(CausalAttentionWithLse(q, k, v, LocalAttentionOptions{}));
    }
    torch::autograd::backward({out}, {p.dout.to(at::kFloat)});
    return std::vector<at::Tensor>{out.detach(), q.grad(), k.grad(), v.grad()};
  };
  const auto a = run(true), b = run(false);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i], b[i])) << "tensor " << i;
  // And comm == nullptr is the same pass-through.
  at::Tensor q = p.q.to(at::kFloat), k = p.k.to(at::kFloat), v = p.v.to(at::kFloat);
  EXPECT_TRUE(at::equal(*ContextParallelAttention(q, k, v, nullptr, CpOptions{}), a[0]));
}

// Folding per-block results in rounds (little memory) gives what folding
// them at once does; an out-of-range setting is refused naming the field.
TEST(CpAttention, FoldingInRoundsMatchesAndBadSettingIsRejected) {
  at::set_num_threads(1);
  const int cp = 4;  // cp + 2 = 6 blocks a rank: rounds at 1 and 2
  const AttentionProblem p = testing::MakeProblem(1, 4, 2, 16 * cp, 8, 77);
  const AttentionResult ref = testing::ReferenceAttention(p, /*causal=*/true);
  for (CpMode mode : {CpMode::kRing, CpMode::kAllGather}) {
    for (int pending : {1, 2}) {
      CpOptions options;
      options.mode = mode;
      options.fold_max_pending = pending;
      const CpRun got = RunCp(p, cp, options, at::kFloat);
      ASSERT_TRUE(got.out.defined());
      EXPECT_LT(MaxAbsError(got.out, ref.out), 1e-5) << CpModeName(mode) << " " << pending;
      EXPECT_LT(MaxAbsError(got.dq, ref.dq), 1e-5) << CpModeName(mode) << " " << pending;
      EXPECT_LT(MaxAbsError(got.dk, ref.dk), 1e-5) << CpModeName(mode) << " " << pending;
      EXPECT_LT(MaxAbsError(got.dv, ref.dv), 1e-5) << CpModeName(mode) << " " << pending;
    }
  }
  testing::RunRanks(2, [&](int, comm::Communicator& comm) {
    CpOptions bad;
    bad.fold_max_pending = 0;
    const at::Tensor q = at::randn({1, 2, 8, 4});
    auto out = ContextParallelAttention(q, q, q, &comm, bad);
    ASSERT_FALSE(out.ok());
    EXPECT_NE(out.status().message().find("fold_max_pending is 0; it must be 1..15"),
              std::string::npos)
        << out.status();
  });
}

// A dead peer ends the call with the communicator's error, naming the step,
// this rank and the peer; nothing hangs.
TEST(CpAttention, DeadPeerIsAnErrorNamingTheTransfer) {
  at::set_num_threads(1);
  for (CpMode mode : {CpMode::kRing, CpMode::kAllGather, CpMode::kUlysses}) {
    comm::FakeWorld world(2, std::chrono::milliseconds(300));
    std::unique_ptr<comm::Communicator> comm = world.Join(0);
    world.Kill(1);
    CpOptions options;
    options.mode = mode;
    const at::Tensor q = at::randn({1, 2, 8, 4}), k = at::randn({1, 2, 8, 4});
    auto out = ContextParallelAttention(q, k, k, comm.get(), options);
    ASSERT_FALSE(out.ok()) << CpModeName(mode);
    EXPECT_TRUE(out.status().code() == absl::StatusCode::kDeadlineExceeded ||
                out.status().code() == absl::StatusCode::kAborted)
        << out.status();
    const std::string want = mode == CpMode::kRing        ? "ring attention forward, step 0: rank 0"
                             : mode == CpMode::kAllGather ? "all-gather attention forward: rank 0"
                                                          : "all-to-all step 1: rank 0";
    EXPECT_NE(out.status().message().find(want), std::string::npos) << out.status();
  }
}

TEST(CpAttention, RejectsBadLayoutsBeforeAnyWork) {
  at::set_num_threads(1);
  testing::RunRanks(2, [&](int rank, comm::Communicator& comm) {
    const at::Tensor q = at::randn({1, 4, 7, 8}), k = at::randn({1, 2, 7, 8});
    auto odd = ContextParallelAttention(q, k, k, &comm, CpOptions{});
    ASSERT_FALSE(odd.ok());
    EXPECT_NE(odd.status().message().find("multiple of 2*cp = 4"), std::string::npos)
        << odd.status();
    const at::Tensor q3 = at::randn({1, 3, 8, 8}), k3 = at::randn({1, 3, 8, 8});
    CpOptions ulysses;
    ulysses.mode = CpMode::kUlysses;
    auto heads = ContextParallelAttention(q3, k3, k3, &comm, ulysses);
    ASSERT_FALSE(heads.ok());
    EXPECT_NE(heads.status().message().find("n_heads divisible by cp"), std::string::npos)
        << heads.status();
    auto gqa = ContextParallelAttention(at::randn({1, 3, 8, 8}), at::randn({1, 2, 8, 8}),
                                        at::randn({1, 2, 8, 8}), &comm, CpOptions{});
    ASSERT_FALSE(gqa.ok());
    EXPECT_NE(gqa.status().message().find("not a multiple of n_kv_heads"), std::string::npos);
  });
}

}  // namespace
}  // namespace kp::parallel
