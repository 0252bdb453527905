#include "launcher/mpi/mpi_launcher.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "launcher/mpi/mpi_env.h"
#include "launcher/mpi/mpi_plan.h"
#include "launcher/mpi/rendezvous_file.h"
#include "launcher/slurm/node_runner.h"
#include "runtime/agent/device_discovery.h"
#include "runtime/common/clock.h"

namespace kp::launcher {
namespace {

// Job keys end up in agent ids and a job label (<= 64 bytes): keep them
// short and plain.
std::string SafeKey(const std::string& key) {
  bool plain = !key.empty() && key.size() <= 24;
  for (char c : key) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.')) plain = false;
  }
  return plain ? key : absl::StrCat("h", JobKeyNumber(key) % 1'000'000'007);
}

class MpiLauncher final : public Launcher {
 public:
  explicit MpiLauncher(const ClusterFlags* flags) : flags_(flags) {}
  std::string name() const override { return "mpi"; }

  int Launch(const LaunchOptions& o) override {
    auto role = Plan(o);
    if (!role.ok()) {
      std::fprintf(stderr, "kprun mpi: %s\n", role.status().ToString().c_str());
      return absl::IsDeadlineExceeded(role.status()) ? 1 : 2;
    }
    return RunClusterNodeOrReport(o, *role);
  }

 private:
  absl::StatusOr<NodeRole> Plan(const LaunchOptions& o) {
    ClusterFlags flags = *flags_;
    const EnvLookup env = ProcessEnvironment();
    KP_RETURN_IF_ERROR(ApplyClusterEnv(env, &flags));
    KP_ASSIGN_OR_RETURN(MpiTask task, ParseMpiTask(env));
    JobShape shape;
    shape.dp = o.spec.dp() > 0 ? o.spec.dp() : 1;
    shape.cp = o.spec.cp() > 0 ? o.spec.cp() : 1;
    MpiPlanOptions popts;
    popts.coordinator = flags.coordinator;
    popts.coordinator_address = flags.coordinator_address;
    popts.rendezvous_file = flags.rendezvous_file;
    popts.port_base = flags.port_base;
    popts.resume = flags.resume;
    popts.grace_seconds = flags.grace_seconds;
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    KP_ASSIGN_OR_RETURN(MpiPlan plan, MakeMpiPlan(task, shape, popts, host));

    const std::string key = SafeKey(task.job_key.empty() ? "nokey" : task.job_key);
    if (plan.needs_rendezvous) {
      if (plan.start_coordinator) {
        KP_RETURN_IF_ERROR(PublishCoordinator(flags.rendezvous_file, key, plan.coordinator_target));
      } else {
        RealClock clock;
        KP_ASSIGN_OR_RETURN(plan.coordinator_target,
                            AwaitCoordinator(flags.rendezvous_file, key, flags.register_timeout_s * 1'000'000LL,
                                             clock));
      }
    }

    NodeRole role;
    role.launcher = "mpi";
    role.job_key = key;
    role.node_index = plan.rank;
    role.num_nodes = plan.world;
    role.start_coordinator = plan.start_coordinator;
    role.listen_address = absl::StrCat("0.0.0.0:", plan.ports.coordinator);
    role.coordinator_target = plan.coordinator_target;
    role.submit = plan.submit;
    role.hostname = absl::StrCat(host, "/rank", plan.rank);
    if (o.cpu_slots > 0) {
      role.devices = agent::CpuSlots(1);
    } else {
      auto devices = agent::DiscoverDevices(0);
      if (devices.ok()) {
        for (const auto& d : *devices) {
          if (d.kind() == v1::DEVICE_KIND_CUDA && d.index() == plan.device) role.devices.push_back(d);
        }
      }
      if (role.devices.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "rank ", plan.rank, ": no GPU ", plan.device,
            " on this host (local rank = GPU index); run more hosts, fewer ranks per host, or --cpu_slots 1"));
      }
    }
    role.token_file = flags.token_file;
    role.shared_token_path = absl::StrCat(o.run_root, "/.kprun/mpi-", key, ".token");
    role.resume = plan.resume;
    role.grace_seconds = plan.grace_seconds;
    role.register_timeout_ms = flags.register_timeout_s * 1000LL;
    return role;
  }

  const ClusterFlags* flags_;
};

}  // namespace

std::unique_ptr<Launcher> NewMpiLauncher(const ClusterFlags* flags) { return std::make_unique<MpiLauncher>(flags); }

}  // namespace kp::launcher
