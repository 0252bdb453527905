#include "launcher/slurm/plan.h"

#include <charconv>

#include "absl/strings/str_cat.h"

namespace kp::launcher {
namespace {

absl::Status CheckHostPort(const std::string& target) {
  size_t colon = target.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == target.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--coordinator '", target, "' is not HOST:PORT"));
  }
  int port = 0;
  const char* begin = target.data() + colon + 1;
  const char* end = target.data() + target.size();
  auto [ptr, ec] = std::from_chars(begin, end, port);
  if (ec != std::errc() || ptr != end || port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--coordinator '", target, "': port is not in 1..65535"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> AddressOf(const std::string& name, const std::string& override_value,
                                      const char* option, const Resolver& resolve) {
  if (!override_value.empty()) return override_value;
  auto address = resolve(name);
  if (!address.ok()) {
    return absl::NotFoundError(absl::StrCat(address.status().message(), " (node '", name,
                                            "'); give its address with ", option));
  }
  return address;
}

}  // namespace

std::string SlotKindName(SlotKind kind) { return kind == SlotKind::kGpu ? "GPU" : "CPU slot"; }

absl::Status CheckShapeFits(const JobShape& shape, int nodes, int gpus_per_node,
                            int cpu_slots_per_node, const std::string& what_to_change) {
  const bool gpus = gpus_per_node > 0;
  const int64_t per_node = gpus ? gpus_per_node : cpu_slots_per_node;
  const int64_t total = per_node * nodes;
  if (shape.world() <= total) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "the job wants dp x cp = ", shape.dp, " x ", shape.cp, " = ", shape.world(),
      " ranks but the allocation has ", nodes, " node(s) x ", per_node, " ",
      gpus ? "GPU(s)" : "CPU slot(s)", " = ", total, ": ", what_to_change,
      ", or lower dp/cp in the job file"));
}

absl::StatusOr<SlurmPlan> MakeSlurmPlan(const SlurmTask& task, const JobShape& shape,
                                        const SlurmPlanOptions& options, const Resolver& resolve) {
  for (size_t i = 0; i < task.tasks_per_node.size(); ++i) {
    if (task.tasks_per_node[i] != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kprun slurm runs one task per node (its agent starts the workers), but node ",
          task.nodes[i], " has ", task.tasks_per_node[i],
          " tasks: start it with `srun --ntasks-per-node=1`"));
    }
  }
  SlurmPlan plan;
  plan.job_id = task.job_id;
  plan.node_index = task.node_id;
  plan.num_nodes = static_cast<int>(task.nodes.size());
  plan.node_name = task.node_name();
  plan.world = shape.world();
  plan.resume = options.resume || task.restart_count > 0;
  plan.grace_seconds = options.grace_seconds;

  if (task.gpus_on_node > 0) {
    plan.slot_kind = SlotKind::kGpu;
    plan.slots_per_node = task.gpus_on_node;
  } else {
    plan.slot_kind = SlotKind::kCpu;
    plan.slots_per_node = options.cpu_slots_per_node > 0 ? options.cpu_slots_per_node
                          : task.cpus_on_node > 0        ? task.cpus_on_node
                                                         : 1;
  }
  plan.total_slots = static_cast<int64_t>(plan.slots_per_node) * plan.num_nodes;
  // Slurm gives only this node's GPU count; allocations are homogeneous per
  // --gpus-per-node, which is what kp.sbatch asks for.
  KP_RETURN_IF_ERROR(CheckShapeFits(
      shape, plan.num_nodes, plan.slot_kind == SlotKind::kGpu ? plan.slots_per_node : 0,
      plan.slots_per_node,
      plan.slot_kind == SlotKind::kGpu
          ? "ask for more with sbatch -N / --gpus-per-node"
          : "ask for more nodes with sbatch -N, set --cpu-slots-per-node, or request GPUs"));

  plan.ports = options.port_base > 0 ? PortsAt(options.port_base) : PortsForJob(task.job_id);
  plan.agent_port = plan.ports.agent(plan.node_index);
  if (!options.coordinator.empty()) {
    KP_RETURN_IF_ERROR(CheckHostPort(options.coordinator));
    plan.coordinator_target = options.coordinator;
    plan.start_coordinator = false;
  } else {
    KP_ASSIGN_OR_RETURN(std::string address,
                        AddressOf(task.nodes[0], options.coordinator_address,
                                  "--coordinator-address (or KP_COORDINATOR_ADDRESS)", resolve));
    plan.coordinator_target = absl::StrCat(address, ":", plan.ports.coordinator);
    plan.start_coordinator = plan.node_index == 0;
  }
  plan.submit = plan.node_index == 0;
  KP_ASSIGN_OR_RETURN(plan.node_address,
                      AddressOf(plan.node_name, options.node_address,
                                "--node-address (or KP_NODE_ADDRESS)", resolve));
  return plan;
}

}  // namespace kp::launcher
