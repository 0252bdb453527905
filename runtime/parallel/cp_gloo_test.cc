// Context-parallel attention over real processes: 2 and 4 ranks through the
// Gloo backend (TCP on loopback, FileStore rendezvous in TEST_TMPDIR), each
// mode forward and backward against the float64 reference, plus the parity
// self-check.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "absl/strings/str_cat.h"
#include "runtime/comm/gloo_communicator.h"
#include "runtime/comm/multiprocess.h"
#include "runtime/comm/store.h"
#include "runtime/parallel/cp_attention.h"
#include "runtime/parallel/cp_test_util.h"
#include "runtime/parallel/parity_check.h"
#include "runtime/parallel/zigzag.h"

namespace kp::parallel {
namespace {

absl::Status CheckClose(const std::string& what, const at::Tensor& got, const at::Tensor& want,
                        double tol) {
  const double err = testing::MaxAbsError(got, want);
  if (err < tol) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": max abs error ", err, " >= ", tol));
}

absl::Status RunRank(int rank, int n, const std::string& dir) {
  at::set_num_threads(1);
  comm::FileStore store(dir);
  comm::GlooOptions options;
  options.timeout = std::chrono::seconds(30);
  KP_ASSIGN_OR_RETURN(std::unique_ptr<comm::Communicator> comm,
                      comm::CreateGlooCommunicator(rank, n, &store, options));
  const testing::AttentionProblem p = testing::MakeProblem(1, 4, 2, 16 * n, 8, 77);
  const testing::AttentionResult ref = testing::ReferenceAttention(p, true);
  auto shard = [&](const at::Tensor& t, at::ScalarType dt) {
    return *ZigzagShard(t.to(dt), 2, n, rank);
  };
  for (CpMode mode : {CpMode::kRing, CpMode::kAllGather, CpMode::kUlysses}) {
    at::Tensor q = shard(p.q, at::kFloat).set_requires_grad(true);
    at::Tensor k = shard(p.k, at::kFloat).set_requires_grad(true);
    at::Tensor v = shard(p.v, at::kFloat).set_requires_grad(true);
    CpOptions cp;
    cp.mode = mode;
    KP_ASSIGN_OR_RETURN(at::Tensor out, ContextParallelAttention(q, k, v, comm.get(), cp));
    torch::autograd::backward({out}, {shard(p.dout, at::kFloat)});
    const std::string m = absl::StrCat(CpModeName(mode), " rank ", rank, " ");
    KP_RETURN_IF_ERROR(CheckClose(m + "out", out, shard(ref.out, at::kDouble), 1e-5));
    KP_RETURN_IF_ERROR(CheckClose(m + "dq", q.grad(), shard(ref.dq, at::kDouble), 1e-5));
    KP_RETURN_IF_ERROR(CheckClose(m + "dk", k.grad(), shard(ref.dk, at::kDouble), 1e-5));
    KP_RETURN_IF_ERROR(CheckClose(m + "dv", v.grad(), shard(ref.dv, at::kDouble), 1e-5));
  }
  ParityConfig parity;
  parity.options.mode = CpMode::kRing;
  return CheckCpParity(*comm, parity);
}

class CpGlooTest : public ::testing::TestWithParam<int> {};

TEST_P(CpGlooTest, EveryModeMatchesReferenceOverProcesses) {
  const int n = GetParam();
  const std::string dir = comm::testing::FreshDir(absl::StrCat("cp_gloo_", n));
  const auto results =
      comm::testing::RunProcesses(n, [&](int rank) { return RunRank(rank, n, dir); });
  for (int r = 0; r < n; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
}

INSTANTIATE_TEST_SUITE_P(Processes, CpGlooTest, ::testing::Values(2, 4));

}  // namespace
}  // namespace kp::parallel
