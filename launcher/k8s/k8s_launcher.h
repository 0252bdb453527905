// `kprun k8s run JOB.yaml`: the entry point of every pod of the rendered
// Indexed Job. The pod's index (JOB_COMPLETION_INDEX) is its node index; the
// coordinator is the rendered Deployment, reached through its Service; pod 0
// waits for every pod's agent, submits the job and streams its progress.
// The launch key (the Job's controller uid, from the downward API) tells
// this Job's kp job apart from earlier ones on the same coordinator.
#ifndef KP_LAUNCHER_K8S_K8S_LAUNCHER_H_
#define KP_LAUNCHER_K8S_K8S_LAUNCHER_H_

#include <memory>

#include "launcher/launcher.h"
#include "launcher/slurm/cluster_flags.h"
#include "launcher/slurm/environment.h"

namespace kp::launcher {

struct NodeRole;

// The role of this pod; exposed for tests. Errors name the variable or flag.
absl::StatusOr<NodeRole> K8sNodeRole(const LaunchOptions& options, const ClusterFlags& flags,
                                     const EnvLookup& env);

std::unique_ptr<Launcher> NewK8sLauncher(const ClusterFlags* flags);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_K8S_K8S_LAUNCHER_H_
