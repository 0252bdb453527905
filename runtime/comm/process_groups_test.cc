#include "runtime/comm/process_groups.h"

#include <ATen/ATen.h>

#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "runtime/comm/fake_communicator.h"

namespace kp::comm {
namespace {

using std::chrono::milliseconds;

// Rank r holds r + 1; group sums show the layout, then AbortAll ends all.
absl::Status Exercise(ProcessGroups& pg, int rank) {
  const MeshShape s = pg.shape();
  at::Tensor a = at::full({3}, static_cast<double>(rank + 1), at::kDouble);
  at::Tensor b = a.clone();
  KP_RETURN_IF_ERROR(pg.dp().AllReduce(a, ReduceOp::kSum));
  KP_RETURN_IF_ERROR(pg.cp().AllReduce(b, ReduceOp::kSum));
  double want_dp = 0, want_cp = 0;
  for (int d = 0; d < s.dp; ++d) want_dp += WorldRankOf(s, {d, pg.coord().cp_rank}) + 1;
  for (int c = 0; c < s.cp; ++c) want_cp += WorldRankOf(s, {pg.coord().dp_rank, c}) + 1;
  if (a[0].item<double>() != want_dp || b[0].item<double>() != want_cp) {
    return absl::InternalError(absl::StrCat("rank ", rank, ": dp sum ", a[0].item<double>(),
                                            " want ", want_dp, ", cp sum ", b[0].item<double>(),
                                            " want ", want_cp));
  }
  KP_RETURN_IF_ERROR(pg.world().Barrier());
  pg.AbortAll(absl::CancelledError("generation over"));
  if (pg.dp().Barrier().code() != absl::StatusCode::kAborted ||
      pg.world().Barrier().code() != absl::StatusCode::kAborted) {
    return absl::InternalError("calls after AbortAll should be ABORTED");
  }
  return absl::OkStatus();
}

TEST(ProcessGroupsTest, GlooRanksAsThreads) {
  InMemoryStore store;
  const MeshShape shape{2, 2};
  std::vector<absl::Status> st(4);
  std::vector<std::thread> threads;
  for (int r = 0; r < 4; ++r) {
    threads.emplace_back([&, r] {
      CommOptions o;
      o.timeout = milliseconds(10000);
      auto pg = ProcessGroups::Create("gloo", r, 4, shape, store, o);
      st[r] = pg.ok() ? Exercise(**pg, r) : pg.status();
    });
  }
  for (auto& t : threads) t.join();
  for (auto& s : st) EXPECT_TRUE(s.ok()) << s;
}

TEST(ProcessGroupsTest, FakeWorldAndBadShape) {
  FakeWorld world(6, milliseconds(5000));
  std::vector<absl::Status> st(6);
  std::vector<std::thread> threads;
  for (int r = 0; r < 6; ++r) {
    threads.emplace_back([&, r] {
      auto pg = ProcessGroups::FromWorld(world.Join(r), MeshShape{3, 2});
      st[r] = pg.ok() ? Exercise(**pg, r) : pg.status();
    });
  }
  for (auto& t : threads) t.join();
  for (auto& s : st) EXPECT_TRUE(s.ok()) << s;
  InMemoryStore store;
  auto bad = ProcessGroups::Create("gloo", 0, 4, MeshShape{3, 2}, store, CommOptions{});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kp::comm
