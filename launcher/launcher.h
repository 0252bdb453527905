// kprun's ways of running a job. `kprun local` runs everything on this
// machine; `slurm`, `mpi` and `k8s` (launcher/slurm, launcher/mpi,
// launcher/k8s) bootstrap the same coordinator and agents through a cluster
// manager. Each is a Launcher: it gets the parsed job
// and the common options and returns kprun's exit status.
#ifndef KP_LAUNCHER_LAUNCHER_H_
#define KP_LAUNCHER_LAUNCHER_H_

#include <memory>
#include <string>
#include <vector>

#include "kp/v1/job.pb.h"

namespace kp::launcher {

struct LaunchOptions {
  std::string job_file;
  v1::JobSpec spec;
  std::string worker_binary;  // empty = the kp-train found next to kprun
  std::vector<std::string> worker_args;
  std::string run_root = "runs";
  std::string config_root;      // default: the current directory
  std::string data_root;        // default: the current directory
  std::string checkpoint_root;  // default: <run_root>/checkpoints
  int cpu_slots = 0;            // 0: GPUs via nvidia-smi, else dp*cp CPU slots
  int stop_grace_ms = 10000;
  bool quiet = false;
};

class Launcher {
 public:
  virtual ~Launcher() = default;
  virtual std::string name() const = 0;
  virtual int Launch(const LaunchOptions& options) = 0;
};

std::unique_ptr<Launcher> NewLocalLauncher();
// A launcher that says "<name>: not yet implemented" and returns 2.
std::unique_ptr<Launcher> NewNotImplementedLauncher(const std::string& name);

// The default worker: kp-train next to this executable (installed bundles) or
// at ../runtime/worker/kp-train (a Bazel output tree). Empty when neither exists.
std::string DefaultWorkerBinary();

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_LAUNCHER_H_
