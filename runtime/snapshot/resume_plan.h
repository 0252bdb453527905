// The coordinator's side of in-memory snapshots, as pure functions of the
// placement and of what the agents report (no clock, no gRPC):
//  - where each rank sends its snapshots: its own agent (survives a worker
//    crash) and a peer, the agent of another rank on another node (survives
//    the loss of the rank's node);
//  - on a restart, the newest step for which one generation's snapshot of
//    every rank is held by an agent still usable, and which agent serves
//    each rank (the one the rank now runs on when it holds it).
#ifndef KP_RUNTIME_SNAPSHOT_RESUME_PLAN_H_
#define KP_RUNTIME_SNAPSHOT_RESUME_PLAN_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kp/v1/agent.pb.h"
#include "kp/v1/job.pb.h"

namespace kp::snapshot {

struct AgentView {
  std::string agent_id;
  std::string snapshot_address;  // empty: the agent keeps no snapshots
  // Alive and heard from since the fault: a dead node's agent may not be
  // declared lost yet, and its memory is gone.
  bool usable = false;
  std::vector<v1::SnapshotHolding> holdings;
};

// Own agent's address first (when it has one), then a peer's: the agent of
// rank (rank + k) mod world for the smallest k whose agent differs, else any
// other usable agent (the next by id). Empty when no agent keeps snapshots.
std::vector<std::string> TargetsFor(int rank, const std::vector<v1::Assignment>& placed,
                                    const std::vector<AgentView>& agents);

struct ResumeChoice {
  int64_t step = 0;
  int64_t generation = 0;                // of the snapshots chosen
  std::vector<std::string> address_by_rank;
};

// Among usable agents' holdings of `job_id` taken with `world_size` ranks:
// the newest (step, then generation) set in which every rank is held.
// `placed_agent_by_rank` (may be empty) names each rank's new agent, preferred
// as the source. nullopt when no complete set survives.
std::optional<ResumeChoice> ChooseResume(const std::string& job_id, int world_size,
                                         const std::vector<AgentView>& agents,
                                         const std::vector<std::string>& placed_agent_by_rank = {});

// Fills the snapshot fields of a new generation's assignments: cadence and
// targets when the spec asks for snapshots, and for a resuming generation
// the snapshot to resume from when a complete set survives. Returns a line
// for the log saying what was chosen and why (empty when snapshots are off).
std::string ApplySnapshotPlan(const v1::JobSpec& spec, const std::vector<AgentView>& agents,
                              std::vector<v1::Assignment>* placed);

}  // namespace kp::snapshot

#endif  // KP_RUNTIME_SNAPSHOT_RESUME_PLAN_H_
