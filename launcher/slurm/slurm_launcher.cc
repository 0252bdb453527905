#include "launcher/slurm/slurm_launcher.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "launcher/slurm/node_runner.h"
#include "launcher/slurm/plan.h"
#include "runtime/agent/device_discovery.h"

namespace kp::launcher {
namespace {

class SlurmLauncher final : public Launcher {
 public:
  explicit SlurmLauncher(const ClusterFlags* flags) : flags_(flags) {}
  std::string name() const override { return "slurm"; }

  int Launch(const LaunchOptions& o) override {
    auto role = Plan(o);
    if (!role.ok()) {
      std::fprintf(stderr, "kprun slurm: %s\n", role.status().ToString().c_str());
      return 2;
    }
    return RunClusterNodeOrReport(o, *role);
  }

 private:
  absl::StatusOr<NodeRole> Plan(const LaunchOptions& o) {
    ClusterFlags flags = *flags_;
    const EnvLookup env = ProcessEnvironment();
    KP_RETURN_IF_ERROR(ApplyClusterEnv(env, &flags));
    KP_ASSIGN_OR_RETURN(SlurmTask task, ParseSlurmTask(env));
    JobShape shape;
    shape.dp = o.spec.dp() > 0 ? o.spec.dp() : 1;
    shape.cp = o.spec.cp() > 0 ? o.spec.cp() : 1;
    shape.cpu_fallback = o.spec.cpu_fallback();
    SlurmPlanOptions popts;
    popts.coordinator = flags.coordinator;
    popts.coordinator_address = flags.coordinator_address;
    popts.node_address = flags.node_address;
    popts.port_base = flags.port_base;
    popts.cpu_slots_per_node = o.cpu_slots;
    popts.resume = flags.resume;
    popts.grace_seconds = flags.grace_seconds;
    if (o.cpu_slots > 0) task.gpus_on_node = 0;  // --cpu_slots: run on CPU slots
    KP_ASSIGN_OR_RETURN(SlurmPlan plan, MakeSlurmPlan(task, shape, popts));

    NodeRole role;
    role.launcher = "slurm";
    role.job_key = std::to_string(plan.job_id);
    role.node_index = plan.node_index;
    role.num_nodes = plan.num_nodes;
    role.start_coordinator = plan.start_coordinator;
    role.listen_address = absl::StrCat("0.0.0.0:", plan.ports.coordinator);
    role.coordinator_target = plan.coordinator_target;
    role.submit = plan.submit;
    role.hostname = plan.node_name;
    if (plan.slot_kind == SlotKind::kGpu) {
      KP_ASSIGN_OR_RETURN(role.devices, agent::DiscoverDevices(0));
    } else {
      role.devices = agent::CpuSlots(plan.slots_per_node);
    }
    role.token_file = flags.token_file;
    role.shared_token_path = absl::StrCat(o.run_root, "/.kprun/slurm-", plan.job_id, ".token");
    role.resume = plan.resume;
    role.grace_seconds = plan.grace_seconds;
    role.register_timeout_ms = flags.register_timeout_s * 1000LL;
    std::fprintf(stderr,
                 "kprun slurm: job %lld node %d/%d (%s)%s, coordinator %s, %d %s(s) here, %lld rank(s) wanted\n",
                 static_cast<long long>(plan.job_id), plan.node_index, plan.num_nodes, plan.node_name.c_str(),
                 plan.start_coordinator ? " runs the coordinator" : "", plan.coordinator_target.c_str(),
                 plan.slots_per_node, SlotKindName(plan.slot_kind).c_str(), static_cast<long long>(plan.world));
    return role;
  }

  const ClusterFlags* flags_;
};

}  // namespace

std::unique_ptr<Launcher> NewSlurmLauncher(const ClusterFlags* flags) {
  return std::make_unique<SlurmLauncher>(flags);
}

}  // namespace kp::launcher
