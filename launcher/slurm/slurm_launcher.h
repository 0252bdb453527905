// `kprun slurm JOB.yaml`: one task per node under srun. Reads the task's
// Slurm environment, plans (slurm/plan.h), checks the job fits, then runs
// this node's part (node_runner.h).
#ifndef KP_LAUNCHER_SLURM_SLURM_LAUNCHER_H_
#define KP_LAUNCHER_SLURM_SLURM_LAUNCHER_H_

#include <memory>

#include "launcher/launcher.h"
#include "launcher/slurm/cluster_flags.h"

namespace kp::launcher {

// `flags` is read when Launch runs (after the command line is parsed) and
// must outlive the launcher.
std::unique_ptr<Launcher> NewSlurmLauncher(const ClusterFlags* flags);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_SLURM_SLURM_LAUNCHER_H_
