// One Slurm task's view of its job, read from the environment srun/sbatch
// give it. No scontrol: compute nodes may lack it, and tests feed tables.
#ifndef KP_LAUNCHER_SLURM_SLURM_ENV_H_
#define KP_LAUNCHER_SLURM_SLURM_ENV_H_

#include <cstdint>
#include <string>
#include <vector>

#include "launcher/slurm/environment.h"
#include "runtime/common/status.h"

namespace kp::launcher {

struct SlurmTask {
  int64_t job_id = 0;               // SLURM_JOB_ID
  std::vector<std::string> nodes;   // the step's (else the job's) node list, expanded
  std::vector<int> tasks_per_node;  // one entry per node
  int node_id = 0;                  // SLURM_NODEID: index into `nodes`
  int proc_id = 0;                  // SLURM_PROCID: global task rank
  int local_id = 0;                 // SLURM_LOCALID: task rank on this node
  int ntasks = 0;                   // SLURM_NTASKS (or the sum of tasks_per_node)
  // GPUs of this node: SLURM_GPUS_ON_NODE, else the entries of
  // CUDA_VISIBLE_DEVICES, else 0.
  int gpus_on_node = 0;
  std::vector<std::string> visible_devices;  // CUDA_VISIBLE_DEVICES entries
  int cpus_on_node = 0;                      // SLURM_CPUS_ON_NODE (0 if unset)
  int restart_count = 0;                     // SLURM_RESTART_COUNT: > 0 after a requeue

  const std::string& node_name() const { return nodes[node_id]; }
};

// Fails with FAILED_PRECONDITION when SLURM_JOB_ID is unset (not inside an
// allocation), INVALID_ARGUMENT naming the variable for malformed or
// inconsistent values (a node id beyond the node list, a tasks-per-node list
// of another length, ...).
absl::StatusOr<SlurmTask> ParseSlurmTask(const EnvLookup& env);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_SLURM_SLURM_ENV_H_
