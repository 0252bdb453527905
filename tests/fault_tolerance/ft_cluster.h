// Real daemons on loopback for the fault-tolerance tests: a kp-coordinator
// process (SQLite state) and kp-agent processes that run real kp-train
// workers on CPU slots, plus the helpers the tests share (finding a
// worker's pid, reading a worker's metrics and logs).
#ifndef KP_TESTS_FAULT_TOLERANCE_FT_CLUSTER_H_
#define KP_TESTS_FAULT_TOLERANCE_FT_CLUSTER_H_

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
int FreePort();

// A daemon child process; SIGTERM on destruction, SIGKILL if it lingers.
class Daemon {
 public:
  Daemon(std::vector<std::string> argv, std::string log);
  ~Daemon();
  absl::Status Start();
  void Signal(int sig);
  // Sends `sig` and waits up to `wait_ms` for the exit; returns the code.
  std::optional<int> Stop(int sig, int wait_ms);
  const std::string& log() const { return log_; }

 private:
  std::vector<std::string> argv_;
  std::string log_;
  agent::ForkExecLauncher launcher_;
  int64_t handle_ = -1;
};

struct ClusterOptions {
  int agents = 1;
  int slots_per_agent = 2;
  int heartbeat_interval_ms = 200;
  int heartbeat_timeout_ms = 3000;
  int stop_grace_ms = 3000;
  std::vector<std::string> extra_worker_args = {"--threads", "1"};
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
  Daemon& coordinator() { return *coordinator_; }

 private:
  ClusterOptions options_;
  std::string dir_;
  std::string address_;
  std::unique_ptr<Daemon> coordinator_;
  std::vector<std::unique_ptr<Daemon>> agents_;
  std::unique_ptr<launcher::CoordinatorClient> client_;
};

// The pid of the kp-train process of (run directory, generation, rank), if
// one runs now: found by its command line in /proc.
std::optional<int> FindWorkerPid(const std::string& run_dir, int64_t generation, int rank);

// step -> loss from a worker's metrics JSON lines (rank 0 writes them).
std::map<int64_t, double> ReadLosses(const std::string& metrics_jsonl);
std::string ReadFile(const std::string& path);

}  // namespace kp::ft

#endif  // KP_TESTS_FAULT_TOLERANCE_FT_CLUSTER_H_
