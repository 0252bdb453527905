// `kprun k8s render JOB.yaml`: the Kubernetes objects that run one kp job,
// so users `kubectl apply` what kp renders instead of editing YAML by hand.
//
//   ConfigMap   <name>-job            the job file, mounted at /etc/kp/job/
//   PVC         <name>-checkpoints    ReadWriteMany, every pod at /checkpoints
//   PVC         <name>-coordinator    the coordinator's SQLite state (RWO)
//   Deployment  <name>-coordinator    one kp-coordinator, gRPC health probes
//   Service     <name>-coordinator    ClusterIP: gRPC + Prometheus metrics
//   Service     <name>-workers        headless; the pods' DNS subdomain
//   Job         <name>                Indexed, one pod per node (anti-affinity),
//                                     pod i = <name>-i.<name>-workers
//
// Every pod runs `kprun k8s run` (an agent for its node's GPUs; pod 0 also
// submits the job and streams its progress). The bearer token comes from a
// Secret the user creates (key `token`); it is never rendered.
#ifndef KP_LAUNCHER_K8S_RENDER_H_
#define KP_LAUNCHER_K8S_RENDER_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "launcher/slurm/job_shape.h"
#include "runtime/common/status.h"

namespace kp::launcher {

struct K8sOptions {
  std::string name;                  // DNS-1035 label, <= 40 chars; default: the job file's stem
  std::string namespace_name = "default";
  std::string image;                 // required: built from deploy/k8s/Dockerfile
  std::string image_pull_policy = "IfNotPresent";
  int nodes = 0;                     // 0: ceil(dp*cp / gpus_per_node)
  int gpus_per_node = 0;             // 0: CPU pods (then nodes is required)
  std::string cpu = "4";             // per pod request
  std::string memory = "16Gi";       // per pod request and limit
  std::string shm_size = "16Gi";     // /dev/shm for NCCL's shared-memory transport
  std::string checkpoint_size = "100Gi";
  std::string state_size = "1Gi";
  std::string storage_class;         // empty: the cluster's default
  std::string token_secret = "kp-token";
  int grace_seconds = 180;           // SIGTERM -> checkpoint -> exit before SIGKILL
  int coordinator_port = 50051;
  int metrics_port = 9464;
  int agent_port = 50052;
  std::string job_file_name = "job.yaml";
  // Runs each command with the bundle's libraries and the image's libtorch
  // (deploy/k8s/Dockerfile); empty: run kprun and kp-coordinator directly.
  std::string env_wrapper = "/opt/kp/kp-env.sh";
};

// The manifests in apply order. Fails with INVALID_ARGUMENT naming the
// option (bad name, no image, sizes that are not Kubernetes quantities) and
// RESOURCE_EXHAUSTED when dp x cp exceeds nodes x GPUs.
absl::StatusOr<std::vector<nlohmann::ordered_json>> BuildManifests(const K8sOptions& options,
                                                                   const JobShape& shape,
                                                                   const std::string& job_yaml);

// The same as one multi-document YAML stream.
absl::StatusOr<std::string> RenderManifests(const K8sOptions& options, const JobShape& shape,
                                            const std::string& job_yaml);

// The manifests as separate files, for tools that take one object per file.
absl::Status WriteManifests(const std::vector<nlohmann::ordered_json>& manifests,
                            const std::string& dir);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_K8S_RENDER_H_
