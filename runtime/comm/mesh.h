// The 2-D device mesh: world = dp x cp.
//
// Layout: world rank = dp_rank * cp + cp_rank. A context-parallel group is
// `cp` consecutive world ranks; launchers number ranks node by node, so a cp
// group stays within one node (NVLink) whenever cp divides the GPUs per node,
// and only the data-parallel all-reduce (once per step, overlapped with
// backward) crosses nodes. Example, dp = 2, cp = 4 on two 4-GPU nodes:
//   node 0: ranks 0 1 2 3 = cp group 0 (dp_rank 0), cp_rank 0..3
//   node 1: ranks 4 5 6 7 = cp group 1 (dp_rank 1), cp_rank 0..3
//   dp groups: {0,4} {1,5} {2,6} {3,7}
#ifndef KP_RUNTIME_COMM_MESH_H_
#define KP_RUNTIME_COMM_MESH_H_

#include <memory>

#include "runtime/comm/communicator.h"
#include "runtime/common/status.h"

namespace kp::comm {

struct MeshShape {
  int dp = 1;
  int cp = 1;
};

struct MeshCoord {
  int dp_rank = 0;
  int cp_rank = 0;
};

// dp, cp >= 1 and dp * cp == world; the message names the mismatch.
absl::Status ValidateMesh(const MeshShape& shape, int world);
MeshCoord CoordOf(const MeshShape& shape, int world_rank);
int WorldRankOf(const MeshShape& shape, const MeshCoord& coord);

struct Mesh {
  MeshShape shape;
  MeshCoord coord;
  // Ranks sharing my dp_rank, ordered by cp_rank (rank() == coord.cp_rank).
  std::unique_ptr<Communicator> cp;
  // Ranks sharing my cp_rank, ordered by dp_rank (rank() == coord.dp_rank).
  std::unique_ptr<Communicator> dp;
};

// Collective over `world`: splits it into this rank's cp and dp groups.
absl::StatusOr<Mesh> BuildMesh(Communicator& world, const MeshShape& shape);

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_MESH_H_
