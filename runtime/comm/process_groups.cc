#include "runtime/comm/process_groups.h"

namespace kp::comm {

absl::StatusOr<std::unique_ptr<ProcessGroups>> ProcessGroups::FromWorld(
    std::unique_ptr<Communicator> world, const MeshShape& shape, bool with_watchdog) {
  KP_CHECK(world != nullptr);
  std::unique_ptr<ProcessGroups> pg(new ProcessGroups());
  pg->world_ = std::move(world);
  KP_ASSIGN_OR_RETURN(pg->mesh_, BuildMesh(*pg->world_, shape));
  if (with_watchdog) {
    pg->watchdog_ = std::make_unique<Watchdog>();
    pg->watchdog_->Watch(pg->world_.get());
    pg->watchdog_->Watch(pg->mesh_.dp.get());
    pg->watchdog_->Watch(pg->mesh_.cp.get());
  }
  return pg;
}

absl::StatusOr<std::unique_ptr<ProcessGroups>> ProcessGroups::Create(
    const std::string& backend, int rank, int world, const MeshShape& shape, Store& store,
    const CommOptions& options, bool with_watchdog) {
  KP_RETURN_IF_ERROR(ValidateMesh(shape, world));
  KP_ASSIGN_OR_RETURN(auto comm, CreateCommunicator(backend, rank, world, store, options));
  return FromWorld(std::move(comm), shape, with_watchdog);
}

ProcessGroups::~ProcessGroups() {
  // The watchdog must stop looking before the communicators are destroyed.
  watchdog_.reset();
  mesh_.dp.reset();
  mesh_.cp.reset();
  world_.reset();
}

void ProcessGroups::AbortAll(const absl::Status& reason) {
  if (mesh_.dp) mesh_.dp->Abort(reason);
  if (mesh_.cp) mesh_.cp->Abort(reason);
  world_->Abort(reason);
}

}  // namespace kp::comm
