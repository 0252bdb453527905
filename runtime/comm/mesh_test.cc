#include "runtime/comm/mesh.h"

#include <ATen/ATen.h>

#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "runtime/comm/factory.h"
#include "runtime/comm/fake_communicator.h"
#include "runtime/comm/store.h"

namespace kp::comm {
namespace {

using std::chrono::milliseconds;

TEST(MeshTest, CoordinatesRoundTripAndCpIsContiguous) {
  MeshShape s{3, 4};
  for (int r = 0; r < 12; ++r) {
    const MeshCoord c = CoordOf(s, r);
    EXPECT_EQ(WorldRankOf(s, c), r);
    EXPECT_EQ(c.dp_rank, r / 4);  // ranks 0-3 form cp group 0, and so on
  }
  EXPECT_FALSE(ValidateMesh(MeshShape{2, 3}, 8).ok());
  EXPECT_NE(ValidateMesh(MeshShape{2, 3}, 8).message().find("world has 8"), std::string::npos);
  EXPECT_FALSE(ValidateMesh(MeshShape{0, 8}, 0).ok());
}

// Each rank contributes 1 << world_rank: a group's sum names its members.
absl::Status CheckGroups(int rank, Communicator& world, MeshShape shape) {
  KP_ASSIGN_OR_RETURN(Mesh mesh, BuildMesh(world, shape));
  at::Tensor t = at::full({1}, int64_t{1} << rank, at::kLong);
  at::Tensor u = t.clone();
  KP_RETURN_IF_ERROR(mesh.cp->AllReduce(t, ReduceOp::kSum));
  KP_RETURN_IF_ERROR(mesh.dp->AllReduce(u, ReduceOp::kSum));
  int64_t want_cp = 0, want_dp = 0;
  for (int c = 0; c < shape.cp; ++c) want_cp |= int64_t{1} << WorldRankOf(shape, {mesh.coord.dp_rank, c});
  for (int d = 0; d < shape.dp; ++d) want_dp |= int64_t{1} << WorldRankOf(shape, {d, mesh.coord.cp_rank});
  if (t.item<int64_t>() != want_cp || u.item<int64_t>() != want_dp) {
    return absl::InternalError(absl::StrCat("rank ", rank, ": cp group ", t.item<int64_t>(),
                                            " want ", want_cp, ", dp group ", u.item<int64_t>(),
                                            " want ", want_dp));
  }
  return absl::OkStatus();
}

TEST(MeshTest, GroupsHoldTheRightRanks) {
  for (MeshShape shape : {MeshShape{2, 4}, MeshShape{4, 2}, MeshShape{1, 3}, MeshShape{3, 1}}) {
    const int n = shape.dp * shape.cp;
    FakeWorld world(n, milliseconds(5000));
    std::vector<absl::Status> st(n);
    std::vector<std::thread> threads;
    for (int r = 0; r < n; ++r) {
      threads.emplace_back([&, r] {
        auto c = world.Join(r);
        st[r] = CheckGroups(r, *c, shape);
      });
    }
    for (auto& t : threads) t.join();
    for (int r = 0; r < n; ++r) EXPECT_TRUE(st[r].ok()) << shape.dp << "x" << shape.cp << ": " << st[r];
  }
}

TEST(FactoryTest, GlooOverThreadsAndBadNames) {
  InMemoryStore store;
  std::vector<absl::Status> st(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto c = CreateCommunicator("gloo", r, 2, store, milliseconds(10000));
      if (!c.ok()) {
        st[r] = c.status();
        return;
      }
      st[r] = CheckGroups(r, **c, MeshShape{1, 2});
    });
  }
  for (auto& t : threads) t.join();
  for (auto& s : st) EXPECT_TRUE(s.ok()) << s;
  auto bad = CreateCommunicator("mpi", 0, 1, store, milliseconds(10));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("'mpi'"), std::string::npos);
  EXPECT_EQ(CreateCommunicator("fake", 0, 1, store, milliseconds(10)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kp::comm
