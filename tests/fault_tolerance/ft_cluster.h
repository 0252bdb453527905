// Real daemons on loopback for the fault-tolerance tests: a kp-coordinator
// process (SQLite state) and kp-agent processes that run real kp-train
// workers on CPU slots, plus the helpers the tests share (finding a
// worker's pid, reading a worker's metrics and logs).
#ifndef KP_TESTS_FAULT_TOLERANCE_FT_CLUSTER_H_
#define KP_TESTS_FAULT_TOLERANCE_FT_CLUSTER_H_

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "launcher/client.h"
#include "runtime/agent/process_launcher.h"

namespace kp::ft {

inline constexpr char kToken[] = "fault-tolerance-token";

std::string TempDir(const std::string& name);
std::string Runfile(const std::string& path);
// A kp binary (kp-coordinator, kp-agent, kp-train) given by its runfiles
// path, e.g. "runtime/agent/kp-agent": $KP_BIN_DIR/<name> when KP_BIN_DIR is
// set; else the runfile when it exists (bazel test); else <name> beside the
// test binary itself (a bundle's bin/, tools/build_bundle.sh); else the
// runfile path (the error then names it).
std::string BinaryPath(const std::string& runfile);
int FreePort();

// A daemon child process; SIGTERM on destruction, SIGKILL if it lingers.
class Daemon {
 public:
  // `env`: "KEY=VALUE" entries added to this process's environment.
  Daemon(std::vector<std::string> argv, std::string log, std::vector<std::string> env = {});
  ~Daemon();
  absl::Status Start();
  void Signal(int sig);
  // Sends `sig` and waits up to `wait_ms` for the exit; returns the code.
  std::optional<int> Stop(int sig, int wait_ms);
  const std::string& log() const { return log_; }

 private:
  std::vector<std::string> argv_;
  std::string log_;
  std::vector<std::string> env_;
  agent::ForkExecLauncher launcher_;
  int64_t handle_ = -1;
};

struct ClusterOptions {
  int agents = 1;
  int slots_per_agent = 2;  // CPU slots; 0: the agent offers the GPUs it finds
  // Added to the agents' environment, which their workers inherit (e.g. the
  // checkpoint writer's test hooks).
  std::vector<std::string> agent_env;
  int heartbeat_interval_ms = 200;
  int heartbeat_timeout_ms = 3000;
  int stop_grace_ms = 3000;
  std::vector<std::string> extra_worker_args = {"--threads", "1"};
  // Added to kp-coordinator's command line (e.g. --exclude_stragglers).
  std::vector<std::string> extra_coordinator_args;
};

class Cluster {
 public:
  explicit Cluster(ClusterOptions options);
  ~Cluster();
  absl::Status Start();
  launcher::CoordinatorClient& client() { return *client_; }
  const std::string& dir() const { return dir_; }
  // Agent i's run root (agents share one here: the run directory, and with
  // it the checkpoints, is common to every rank, as on a shared filesystem).
  std::string run_root() const { return dir_ + "/runs"; }
  Daemon& agent(int i) { return *agents_[i]; }
  // Starts agent i again (same --agent_id), e.g. after killing it.
  absl::Status RestartAgent(int i);
  // Starts the coordinator again on the same address and database.
  absl::Status RestartCoordinator();
  Daemon& coordinator() { return *coordinator_; }

 private:
  ClusterOptions options_;
  std::string dir_;
  std::string address_;
  std::unique_ptr<Daemon> coordinator_;
  std::vector<std::unique_ptr<Daemon>> agents_;
  std::vector<std::vector<std::string>> agent_argv_;
  std::vector<std::string> coordinator_argv_;
  std::unique_ptr<launcher::CoordinatorClient> client_;
};

// Polls the job until `done` holds or `timeout_s` passes; returns the last status.
v1::JobStatus WaitFor(Cluster& c, const std::string& id, int timeout_s,
                      const std::function<bool(const v1::JobStatus&)>& done);
bool Ended(const v1::JobStatus& s);
// <run_root>/<name>-<job id>.
std::string RunDir(Cluster& c, const v1::JobStatus& job);
// The daemons' logs and the job's worker logs, for failure messages.
std::string Logs(Cluster& c, const std::string& run_dir);
// Waits until rank 0's metrics of `generation` reach `step`; false on timeout.
bool WaitForStep(const std::string& run_dir, int64_t generation, int64_t step, int timeout_s);

// The pid of the kp-train process of (run directory, generation, rank), if
// one runs now: found by its command line in /proc.
std::optional<int> FindWorkerPid(const std::string& run_dir, int64_t generation, int rank);

// step -> loss from a worker's metrics JSON lines (rank 0 writes them).
std::map<int64_t, double> ReadLosses(const std::string& metrics_jsonl);

// After a fault at `fault`: how long until the job left generation 1 (a
// newer generation, or a state other than RUNNING: detection) and until
// generation 2's rank 0 logged its first step (training again). -1 for what
// did not happen within `limit`; returns early if the job FAILED.
struct RecoveryTimes {
  double detect_s = -1;
  double resume_s = -1;
};
RecoveryTimes TimeRecovery(Cluster& c, const std::string& job_id, const std::string& run_dir,
                           std::chrono::steady_clock::time_point fault, std::chrono::seconds limit);
std::string ReadFile(const std::string& path);

// The steps that made the final model of a run that restarted: generation 1
// up to where generation 2 resumed ("resumed from ... at step N" in its
// rank-0 log), generation 2 up to where 3 resumed, and so on.
struct Lineage {
  std::map<int64_t, double> losses;  // step -> loss, from the generation that counts
  std::vector<int64_t> resumed_at;   // per generation >= 2
  std::string error;                 // non-empty when a log or metrics file is missing
};
Lineage ReadLineage(const std::string& run_dir, int64_t generations);

// Global sample indices [0, steps * global_batch) consumed by `lineage`:
// how many were never consumed and how many more than once.
struct SampleCount {
  int64_t lost = 0;
  int64_t repeated = 0;
};
SampleCount CountSamples(const Lineage& lineage, int64_t steps, int64_t global_batch);

// The F32 tensors of a safetensors file (the checkpoint's model part), by
// name; empty on any error (other dtypes are skipped).
std::map<std::string, std::vector<float>> ReadF32Tensors(const std::string& path);

}  // namespace kp::ft

#endif  // KP_TESTS_FAULT_TOLERANCE_FT_CLUSTER_H_
