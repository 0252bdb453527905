#include "launcher/k8s/k8s_launcher.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "launcher/slurm/node_runner.h"
#include "launcher/slurm/plan.h"
#include "runtime/agent/device_discovery.h"

namespace kp::launcher {

absl::StatusOr<NodeRole> K8sNodeRole(const LaunchOptions& o, const ClusterFlags& flags_in, const EnvLookup& env) {
  ClusterFlags flags = flags_in;
  KP_RETURN_IF_ERROR(ApplyClusterEnv(env, &flags));
  if (flags.coordinator.empty()) {
    return absl::InvalidArgumentError("--coordinator HOST:PORT (the coordinator's Service) is required");
  }
  if (flags.nodes < 1) return absl::InvalidArgumentError("--nodes must be >= 1 (the Job's completions)");
  int index = flags.node_index;
  if (index < 0) {
    auto parsed = EnvInt(env, "JOB_COMPLETION_INDEX", std::nullopt, 0);
    if (!parsed.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          parsed.status().message(),
          ": kprun k8s run is the entry point of an Indexed Job's pods (kprun k8s render); elsewhere pass "
          "--node-index"));
    }
    index = static_cast<int>(*parsed);
  }
  if (index >= flags.nodes) {
    return absl::InvalidArgumentError(
        absl::StrCat("node index ", index, " is not below --nodes ", flags.nodes));
  }
  if (flags.token_file.empty()) {
    return absl::InvalidArgumentError(
        "no token: KP_TOKEN_FILE (the rendered pods mount the Secret) or --token_file is required");
  }
  auto key = env("KP_LAUNCH_KEY");
  if (!key.has_value() || key->empty()) {
    return absl::InvalidArgumentError(
        "KP_LAUNCH_KEY is unset: the rendered Job sets it to the Job's controller uid");
  }
  JobShape shape;
  shape.dp = o.spec.dp() > 0 ? o.spec.dp() : 1;
  shape.cp = o.spec.cp() > 0 ? o.spec.cp() : 1;

  NodeRole role;
  role.launcher = "k8s";
  role.job_key = *key;
  role.node_index = index;
  role.num_nodes = flags.nodes;
  role.start_coordinator = false;
  role.coordinator_target = flags.coordinator;
  role.submit = index == 0;
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  role.hostname = host;
  if (o.cpu_slots > 0) {
    role.devices = agent::CpuSlots(o.cpu_slots);
    KP_RETURN_IF_ERROR(CheckShapeFits(shape, flags.nodes, 0, o.cpu_slots,
                                      "render with more --nodes (each pod offers --cpu_slots)"));
  } else {
    KP_ASSIGN_OR_RETURN(role.devices, agent::DiscoverDevices(0));
    KP_RETURN_IF_ERROR(CheckShapeFits(shape, flags.nodes, static_cast<int>(role.devices.size()), 0,
                                      "render with more --nodes or --gpus-per-node"));
  }
  role.token_file = flags.token_file;
  role.resume = flags.resume;
  role.grace_seconds = flags.grace_seconds;
  role.register_timeout_ms = flags.register_timeout_s * 1000LL;
  return role;
}

namespace {

class K8sLauncher final : public Launcher {
 public:
  explicit K8sLauncher(const ClusterFlags* flags) : flags_(flags) {}
  std::string name() const override { return "k8s"; }
  int Launch(const LaunchOptions& o) override {
    auto role = K8sNodeRole(o, *flags_, ProcessEnvironment());
    if (!role.ok()) {
      std::fprintf(stderr, "kprun k8s: %s\n", role.status().ToString().c_str());
      return 2;
    }
    std::fprintf(stderr, "kprun k8s: pod %d/%d, coordinator %s%s\n", role->node_index, role->num_nodes,
                 role->coordinator_target.c_str(), role->submit ? ", submits the job" : "");
    return RunClusterNodeOrReport(o, *role);
  }

 private:
  const ClusterFlags* flags_;
};

}  // namespace

std::unique_ptr<Launcher> NewK8sLauncher(const ClusterFlags* flags) { return std::make_unique<K8sLauncher>(flags); }

}  // namespace kp::launcher
