// The flags `kprun slurm|mpi|k8s` add to kprun's common launch flags. Each
// also has an environment variable (read when the flag is not given), so a
// site can set them once in a module file or an sbatch script.
#ifndef KP_LAUNCHER_SLURM_CLUSTER_FLAGS_H_
#define KP_LAUNCHER_SLURM_CLUSTER_FLAGS_H_

#include <string>

#include <CLI/CLI.hpp>

#include "launcher/slurm/environment.h"

namespace kp::launcher {

struct ClusterFlags {
  std::string coordinator;          // KP_COORDINATOR: HOST:PORT of a running coordinator
  std::string coordinator_address;  // KP_COORDINATOR_ADDRESS: node 0's address
  std::string node_address;         // KP_NODE_ADDRESS: this node's address
  int port_base = 0;                // KP_PORT_BASE
  std::string token_file;           // KP_TOKEN_FILE
  bool resume = false;              // KP_RESUME=1
  int grace_seconds = 90;           // KP_GRACE_SECONDS
  int register_timeout_s = 120;     // KP_REGISTER_TIMEOUT_S
  std::string rendezvous_file;      // KP_RENDEZVOUS_FILE (mpi)
  int nodes = 0;                    // k8s: pods of the Indexed Job
  int node_index = -1;              // k8s: JOB_COMPLETION_INDEX when -1
  int agent_port = 0;               // k8s: accepted for rendered manifests
};

// `launcher` is "slurm", "mpi" or "k8s": each gets the flags it uses.
void AddClusterFlags(CLI::App* cmd, ClusterFlags* flags, const std::string& launcher);

// Fills flags not given on the command line from the environment; errors
// name the variable.
absl::Status ApplyClusterEnv(const EnvLookup& env, ClusterFlags* flags);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_SLURM_CLUSTER_FLAGS_H_
