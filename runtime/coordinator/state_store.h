// Where the coordinator keeps what must survive a restart: jobs, agents,
// assignments and state events. The coordinator writes each transition here
// (one transaction) before it acts on it, so a crash between the two replays
// from the store. Two implementations: SQLite (production) and in-memory
// (tests).
#ifndef KP_RUNTIME_COORDINATOR_STATE_STORE_H_
#define KP_RUNTIME_COORDINATOR_STATE_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "kp/v1/agent.pb.h"
#include "kp/v1/job.pb.h"
#include "runtime/common/status.h"

namespace kp::coordinator {

class StateStore {
 public:
  virtual ~StateStore() = default;

  // One job transition, atomically: upserts `job`; when `assignments` is not
  // null replaces every assignment of the job with them (empty = none); and
  // appends `events`.
  virtual absl::Status CommitJob(const v1::JobStatus& job,
                                 const std::vector<v1::Assignment>* assignments,
                                 const std::vector<v1::JobEvent>& events) = 0;

  virtual absl::Status SaveAgent(const v1::AgentStatus& agent) = 0;

  virtual absl::StatusOr<std::vector<v1::JobStatus>> LoadJobs() = 0;
  virtual absl::StatusOr<std::vector<v1::AgentStatus>> LoadAgents() = 0;
  virtual absl::StatusOr<std::vector<v1::Assignment>> LoadAssignments() = 0;
  // Persisted events of every job, ordered by job then sequence.
  virtual absl::StatusOr<std::vector<v1::JobEvent>> LoadEvents() = 0;
};

std::unique_ptr<StateStore> NewMemoryStateStore();

// Opens (creating when missing) an SQLite database in WAL mode at `path`.
absl::StatusOr<std::unique_ptr<StateStore>> OpenSqliteStateStore(const std::string& path);

}  // namespace kp::coordinator

#endif  // KP_RUNTIME_COORDINATOR_STATE_STORE_H_
