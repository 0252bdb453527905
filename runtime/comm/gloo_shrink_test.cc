// Shrink over real processes and the Gloo backend: one rank exits, the
// survivors' collective fails, they agree through a FileStore and shrink.
#include <unistd.h>

#include <ATen/ATen.h>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "runtime/comm/gloo_communicator.h"
#include "runtime/comm/multiprocess.h"
#include "runtime/comm/shrink.h"
#include "runtime/comm/store.h"

namespace kp::comm {
namespace {

using std::chrono::milliseconds;

at::Tensor Input(uint64_t seed, int rank) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed * 1000 + rank);
  return at::randn({1000}, gen, at::kFloat);
}

absl::Status CheckSum(Communicator& comm, uint64_t seed, int my_old_rank,
                      const std::vector<int>& old_ranks) {
  at::Tensor t = Input(seed, my_old_rank);
  KP_RETURN_IF_ERROR(comm.AllReduce(t, ReduceOp::kSum));
  at::Tensor want = at::zeros({1000}, at::kDouble);
  for (int r : old_ranks) want += Input(seed, r).to(at::kDouble);
  const double err = (t.to(at::kDouble) - want).abs().max().item<double>();
  if (err > 1e-4) {
    return absl::InternalError(absl::StrCat("rank ", my_old_rank, ": sum off by ", err));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Communicator>> Join(Store& store, int rank, int n) {
  GlooOptions o;
  o.timeout = milliseconds(1000);
  return CreateGlooCommunicator(rank, n, &store, o);
}

class GlooShrink : public ::testing::TestWithParam<int> {};

// n ranks; the last one exits without a word after the first all-reduce.
TEST_P(GlooShrink, SurvivorsOfAnExitShrinkAndAllReduce) {
  const int n = GetParam();
  const int dead = n - 1;
  const std::string dir = testing::FreshDir("gloo_shrink");
  auto st = testing::RunProcesses(n, [&](int rank) -> absl::Status {
    FileStore store(dir);
    KP_ASSIGN_OR_RETURN(auto comm, Join(store, rank, n));
    std::vector<int> all;
    for (int r = 0; r < n; ++r) all.push_back(r);
    KP_RETURN_IF_ERROR(CheckSum(*comm, 1, rank, all));
    if (rank == dead) ::_exit(0);
    at::Tensor t = Input(2, rank);
    absl::Status failed = comm->AllReduce(t, ReduceOp::kAvg);
    if (failed.ok()) return absl::InternalError("all-reduce with a dead peer succeeded");
    AgreeOptions o;
    o.window = milliseconds(2500);  // > the 1 s communicator timeout
    KP_ASSIGN_OR_RETURN(ShrinkResult s, ShrinkToSurvivors(*comm, store, "agree/0", o));
    std::vector<int> survivors(all.begin(), all.end() - 1);
    if (s.survivors != survivors || s.comm->size() != n - 1 || s.comm->rank() != rank) {
      return absl::InternalError(absl::StrCat("rank ", rank, ": got rank ", s.comm->rank(),
                                              " of ", s.comm->size()));
    }
    // Twice: the second one proves the new mesh carries on after a call.
    KP_RETURN_IF_ERROR(CheckSum(*s.comm, 3, rank, survivors));
    KP_RETURN_IF_ERROR(CheckSum(*s.comm, 4, rank, survivors));
    at::Tensor mine = at::full({3}, static_cast<double>(rank), at::kDouble);
    at::Tensor gathered = at::empty({n - 1, 3}, at::kDouble);
    KP_RETURN_IF_ERROR(s.comm->AllGather(mine, gathered));
    for (int r = 0; r < n - 1; ++r) {
      if (gathered[r][0].item<double>() != survivors[r]) {
        return absl::InternalError("all-gather slots not in the new rank order");
      }
    }
    return s.comm->Barrier();
  });
  for (int r = 0; r < n - 1; ++r) EXPECT_TRUE(st[r].ok()) << st[r];
}

INSTANTIATE_TEST_SUITE_P(Sizes, GlooShrink, ::testing::Values(3, 4));

// The middle rank of four dies; the survivors demand all four: a deadline
// that names the survivors it waited for and who came.
TEST(GlooShrinkTest, SurvivorTimeoutNamesTheCause) {
  const std::string dir = testing::FreshDir("gloo_shrink_timeout");
  auto st = testing::RunProcesses(4, [&](int rank) -> absl::Status {
    FileStore store(dir);
    KP_ASSIGN_OR_RETURN(auto comm, Join(store, rank, 4));
    KP_RETURN_IF_ERROR(comm->Barrier());
    if (rank == 1) ::_exit(0);
    at::Tensor t = Input(2, rank);
    if (comm->AllReduce(t, ReduceOp::kSum).ok()) {
      return absl::InternalError("all-reduce with a dead peer succeeded");
    }
    AgreeOptions o;
    o.window = milliseconds(2500);
    o.min_survivors = 4;
    auto s = ShrinkToSurvivors(*comm, store, "agree/0", o);
    if (s.status().code() != absl::StatusCode::kDeadlineExceeded ||
        s.status().message().find("timeout waiting for 4 survivors") == std::string::npos ||
        s.status().message().find("[0,2,3]") == std::string::npos) {
      return absl::InternalError(absl::StrCat("got ", s.status().ToString()));
    }
    return absl::OkStatus();
  });
  for (int r : {0, 2, 3}) EXPECT_TRUE(st[r].ok()) << st[r];
}

}  // namespace
}  // namespace kp::comm
