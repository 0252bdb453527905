// Everything a worker needs from the data plane, built in one call: the world
// communicator, its dp x cp mesh (see mesh.h for the layout) and a watchdog
// watching all three. Destruction unwatches before the communicators go, in
// the right order. The engine takes `dp` and `cp`; the fault-tolerance layer
// calls AbortAll when the coordinator ends the generation.
#ifndef KP_RUNTIME_COMM_PROCESS_GROUPS_H_
#define KP_RUNTIME_COMM_PROCESS_GROUPS_H_

#include <memory>
#include <string>

#include "runtime/comm/communicator.h"
#include "runtime/comm/factory.h"
#include "runtime/comm/mesh.h"
#include "runtime/comm/store.h"
#include "runtime/comm/watchdog.h"

namespace kp::comm {

class ProcessGroups {
 public:
  // Collective over all `world` ranks. `store` must outlive the result; give
  // each generation of a job its own namespace (PrefixStore("gen<g>")).
  static absl::StatusOr<std::unique_ptr<ProcessGroups>> Create(
      const std::string& backend, int rank, int world, const MeshShape& shape, Store& store,
      const CommOptions& options, bool with_watchdog = true);

  // Wraps communicators made elsewhere (the fake backend's FakeWorld::Join).
  static absl::StatusOr<std::unique_ptr<ProcessGroups>> FromWorld(
      std::unique_ptr<Communicator> world, const MeshShape& shape, bool with_watchdog = true);

  ~ProcessGroups();

  Communicator& world() { return *world_; }
  Communicator& dp() { return *mesh_.dp; }
  Communicator& cp() { return *mesh_.cp; }
  const MeshCoord& coord() const { return mesh_.coord; }
  const MeshShape& shape() const { return mesh_.shape; }
  // Null when built without one.
  Watchdog* watchdog() { return watchdog_.get(); }

  // Aborts all three communicators (any thread).
  void AbortAll(const absl::Status& reason);

 private:
  ProcessGroups() = default;

  std::unique_ptr<Communicator> world_;
  Mesh mesh_;
  std::unique_ptr<Watchdog> watchdog_;
};

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_PROCESS_GROUPS_H_
