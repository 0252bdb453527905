#include "runtime/comm/mesh.h"

#include "absl/strings/str_cat.h"

namespace kp::comm {

absl::Status ValidateMesh(const MeshShape& shape, int world) {
  if (shape.dp < 1 || shape.cp < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("mesh: dp (", shape.dp, ") and cp (", shape.cp, ") must be >= 1"));
  }
  if (shape.dp * shape.cp != world) {
    return absl::InvalidArgumentError(absl::StrCat("mesh: dp ", shape.dp, " x cp ", shape.cp,
                                                   " = ", shape.dp * shape.cp,
                                                   " ranks, but the world has ", world));
  }
  return absl::OkStatus();
}

MeshCoord CoordOf(const MeshShape& shape, int world_rank) {
  return MeshCoord{world_rank / shape.cp, world_rank % shape.cp};
}

int WorldRankOf(const MeshShape& shape, const MeshCoord& coord) {
  return coord.dp_rank * shape.cp + coord.cp_rank;
}

absl::StatusOr<Mesh> BuildMesh(Communicator& world, const MeshShape& shape) {
  KP_RETURN_IF_ERROR(ValidateMesh(shape, world.size()));
  Mesh mesh;
  mesh.shape = shape;
  mesh.coord = CoordOf(shape, world.rank());
  // Every rank splits in this order: cp first, then dp.
  KP_ASSIGN_OR_RETURN(mesh.cp, world.Split(mesh.coord.dp_rank, mesh.coord.cp_rank));
  KP_ASSIGN_OR_RETURN(mesh.dp, world.Split(mesh.coord.cp_rank, mesh.coord.dp_rank));
  KP_CHECK(mesh.cp && mesh.cp->size() == shape.cp && mesh.cp->rank() == mesh.coord.cp_rank);
  KP_CHECK(mesh.dp && mesh.dp->size() == shape.dp && mesh.dp->rank() == mesh.coord.dp_rank);
  return mesh;
}

}  // namespace kp::comm
