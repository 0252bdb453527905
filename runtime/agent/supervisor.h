// The agent's workers: one process per assignment (job, generation, rank).
// Reconcile() makes the running set match what the coordinator wants;
// Poll() reaps exits, escalates stops and follows metrics; Reports() is what
// the next heartbeat carries.
//
// Stopping is SIGTERM to the worker's process group, then SIGKILL once the
// grace period (on the Clock) has passed. A worker of an assignment that is
// still wanted is never restarted after it exits: a new generation, with a
// new key, is the coordinator's decision.
#ifndef KP_RUNTIME_AGENT_SUPERVISOR_H_
#define KP_RUNTIME_AGENT_SUPERVISOR_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kp/v1/agent.pb.h"
#include "runtime/agent/metrics_tail.h"
#include "runtime/agent/process_launcher.h"
#include "runtime/common/clock.h"

namespace kp::agent {

struct SupervisorOptions {
  // The worker program (kp-train) and flags put before the per-rank ones.
  std::string worker_binary;
  std::vector<std::string> worker_args;
  // Run directories are <run_root>/<assignment.run_name>.
  std::string run_root;
  // Roots the assignment's relative paths resolve under on this node.
  std::string config_root;
  std::string data_root;
  std::string checkpoint_root;
  // Given to workers as KP_TOKEN_FILE for the rendezvous service.
  std::string token_file;
  // Given to workers as KP_TLS_CA when the coordinator serves TLS.
  std::string tls_ca_file;
  int64_t stop_grace_micros = 10'000'000;
};

// Files of one worker, all under its run directory.
struct WorkerPaths {
  std::string run_dir;
  std::string config;
  std::string metrics;
  std::string stdout_log;
  std::string stderr_log;
  std::string rendezvous_dir;
};

WorkerPaths PathsFor(const SupervisorOptions& options, const v1::Assignment& a);

// The config the worker reads: the job's YAML with what the JobSpec decides
// written over it (parallel.dp / cp / cp_mode, precision, data, checkpoint
// cadence), so kp-train's own checks (e.g. parallel.dp == world_size / cp)
// agree with the placement. `data_path` is already resolved on this node.
absl::StatusOr<std::string> RenderWorkerConfig(const std::string& yaml, const v1::Assignment& a,
                                               const std::string& data_path);

// The worker's command line and extra environment. --local_rank is the
// device the worker must use (its CUDA ordinal or CPU slot on this node);
// KP_LOCAL_RANK holds the rank among this job's workers on the node.
absl::StatusOr<std::pair<std::vector<std::string>, std::vector<std::string>>> WorkerCommand(
    const SupervisorOptions& options, const v1::Assignment& a, const WorkerPaths& paths);

class Supervisor {
 public:
  Supervisor(ProcessLauncher* launcher, Clock* clock, SupervisorOptions options);

  void Reconcile(const std::vector<v1::Assignment>& desired);
  // Returns true when a worker exited since the last call (worth an early heartbeat).
  bool Poll();
  std::vector<v1::WorkerReport> Reports() const;
  // SIGTERM to every worker, SIGKILL after the grace period; returns when all
  // have exited. Sleeps on the Clock.
  void StopAll();
  int live_workers() const;

 private:
  struct Worker {
    v1::Assignment assignment;
    int64_t handle = -1;
    v1::WorkerState state = v1::WORKER_STATE_UNSPECIFIED;
    int exit_code = 0;
    std::string message;
    bool stopping = false;  // no longer assigned; being stopped
    bool killed = false;
    int64_t term_sent_micros = 0;
    std::unique_ptr<MetricsTail> metrics;
  };

  void StartWorker(Worker& w);
  void RequestStop(Worker& w);

  ProcessLauncher* launcher_;
  Clock* clock_;
  SupervisorOptions options_;
  std::map<std::string, Worker> workers_;  // key: job/generation/rank
};

}  // namespace kp::agent

#endif  // KP_RUNTIME_AGENT_SUPERVISOR_H_
