// One node of a cluster launch (Slurm, MPI, Kubernetes): the same steps
// whatever started the node, given its role.
//
//   every node      an in-process agent offering this node's devices
//   coordinator     (node 0 unless an existing one is named) an embedded
//                   kp-coordinator listening on the job's derived port
//   submitter       (node 0) waits until every node's agent registered,
//                   submits the job, prints its progress, exits with its status
//   other nodes     wait for the job (found by a label) to end, exit with its
//                   status
//
// SIGTERM or SIGINT (scancel, the time limit, Kubernetes deleting the pod):
// the submitter cancels the job, whose workers get SIGTERM and the grace
// period to write their checkpoint; every node then stops its agent and
// exits. Nothing is left running: each wait has a deadline that names what
// did not happen and what to check.
#ifndef KP_LAUNCHER_SLURM_NODE_RUNNER_H_
#define KP_LAUNCHER_SLURM_NODE_RUNNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "kp/v1/agent.pb.h"
#include "launcher/launcher.h"
#include "runtime/common/status.h"

namespace kp::launcher {

struct NodeRole {
  std::string launcher;  // "slurm", "mpi", "k8s": prefixes messages and ids
  std::string job_key;   // the cluster's id of this launch (Slurm job id, ...)
  int node_index = 0;
  int num_nodes = 1;
  bool start_coordinator = false;
  std::string listen_address;      // for the embedded coordinator, e.g. 0.0.0.0:20016
  std::string coordinator_target;  // HOST:PORT every agent and client dials
  bool submit = false;
  std::string hostname;            // shown in the coordinator's agent list
  std::vector<v1::Device> devices;
  // The bearer token: read from this file. Empty: the coordinator node writes
  // a fresh one to `shared_token_path` (0600) and the others wait for it.
  std::string token_file;
  std::string shared_token_path;
  bool resume = false;  // continue from the newest checkpoint (requeue)
  int grace_seconds = 90;
  int64_t register_timeout_ms = 120'000;  // agents to register / coordinator to answer
};

// The agent id of node `index` of a launch: stable across a requeue, so a
// requeued node gets its own identity back.
std::string AgentIdFor(const NodeRole& role, int index);

// The job label that marks the job of this launch (non-submitting nodes
// find it by this; an external coordinator may run other jobs).
inline constexpr char kLaunchLabel[] = "kp-launch";

// Runs this node's part; returns kprun's exit status (0 COMPLETED, 1 FAILED,
// 3 CANCELLED) or an error naming what failed. SIGINT and SIGTERM must be
// blocked in every thread (kprun's main does so) before calling.
absl::StatusOr<int> RunClusterNode(const LaunchOptions& options, const NodeRole& role);

// As RunClusterNode, printing errors as "kprun <launcher>: ..." and mapping
// them to exit codes (2 for bad input, 1 otherwise).
int RunClusterNodeOrReport(const LaunchOptions& options, const NodeRole& role);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_SLURM_NODE_RUNNER_H_
