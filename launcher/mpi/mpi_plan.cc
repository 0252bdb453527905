#include "launcher/mpi/mpi_plan.h"

#include "absl/strings/str_cat.h"

namespace kp::launcher {

absl::StatusOr<MpiPlan> MakeMpiPlan(const MpiTask& task, const JobShape& shape,
                                    const MpiPlanOptions& options, const std::string& hostname,
                                    const Resolver& resolve) {
  if (shape.world() != task.size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kprun mpi runs one process per rank: the job wants dp x cp = ", shape.dp, " x ",
        shape.cp, " = ", shape.world(), " ranks but mpirun started ", task.size,
        " processes; use `mpirun -np ", shape.world(), "` or change dp/cp in the job file"));
  }
  MpiPlan plan;
  plan.rank = task.rank;
  plan.world = task.size;
  plan.local_rank = task.local_rank;
  plan.device = task.local_rank;
  plan.submit = task.rank == 0;
  plan.resume = options.resume;
  plan.grace_seconds = options.grace_seconds;
  plan.ports = options.port_base > 0 ? PortsAt(options.port_base)
                                     : PortsForJob(JobKeyNumber(task.job_key));
  plan.agent_port = plan.ports.agent(task.local_rank);
  if (!options.coordinator.empty()) {
    plan.coordinator_target = options.coordinator;
    return plan;
  }
  plan.start_coordinator = task.rank == 0;
  if (task.rank == 0) {
    std::string address = options.coordinator_address;
    if (address.empty()) {
      auto resolved = resolve(hostname);
      if (!resolved.ok()) {
        return absl::NotFoundError(absl::StrCat(resolved.status().message(),
                                                " (rank 0's host); give its address with "
                                                "--coordinator-address"));
      }
      address = *resolved;
    }
    plan.coordinator_target = absl::StrCat(address, ":", plan.ports.coordinator);
  }
  if (task.size > 1 && options.rendezvous_file.empty()) {
    return absl::InvalidArgumentError(
        "with more than one process and no --coordinator (or KP_COORDINATOR), the ranks find "
        "rank 0 through --rendezvous-file PATH on a filesystem every host shares");
  }
  plan.needs_rendezvous = task.size > 1;
  return plan;
}

}  // namespace kp::launcher
