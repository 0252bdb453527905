// kp-agent's loop: register this node's devices with the coordinator, then
// heartbeat with the workers' reports and apply each reply's assignments to
// the Supervisor. The coordinator is the source of truth; the agent keeps no
// state of its own, so a restarted agent (same --agent_id) simply gets its
// assignments back, and a restarted coordinator answers NOT_FOUND only if it
// lost the agent, which makes the agent register again.
#ifndef KP_RUNTIME_AGENT_AGENT_H_
#define KP_RUNTIME_AGENT_AGENT_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "kp/v1/coordinator.grpc.pb.h"
#include "runtime/agent/supervisor.h"
#include "runtime/common/status.h"
#include "runtime/snapshot/snapshot_store.h"

namespace kp::agent {

struct AgentOptions {
  std::string coordinator_address;  // host:port
  std::string tls_ca_file;          // empty = plaintext
  std::string token;
  std::string agent_id;  // stable per node (default: hostname)
  std::string hostname;
  std::vector<v1::Device> devices;
  int poll_interval_ms = 100;  // supervision and metrics tailing
  int rpc_timeout_ms = 5000;
  // In-memory snapshots of workers (runtime/snapshot/): the store the
  // agent's SnapshotService fills, reported in every heartbeat and pruned to
  // the jobs the coordinator lists; the service's address for peers. Null /
  // empty: this agent keeps no snapshots.
  snapshot::SnapshotStore* snapshots = nullptr;
  std::string snapshot_address;
};

class Agent {
 public:
  Agent(AgentOptions options, Supervisor* supervisor);
  // Runs until *stop becomes true, then stops every worker and returns.
  // Coordinator outages are retried, not fatal; bad options are.
  absl::Status Run(const std::atomic<bool>* stop);

 private:
  absl::Status Register();
  absl::Status Heartbeat();
  std::unique_ptr<grpc::ClientContext> Context();

  AgentOptions options_;
  Supervisor* supervisor_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
  int64_t heartbeat_interval_ms_ = 1000;
};

}  // namespace kp::agent

#endif  // KP_RUNTIME_AGENT_AGENT_H_
