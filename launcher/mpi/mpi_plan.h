// What one `kprun mpi` process does: every MPI process runs an agent that
// owns exactly one device (GPU local_rank, or one CPU slot), so
// `mpirun -np N` gives a job of N ranks; rank 0 also runs the coordinator,
// submits the job and streams its progress. MPI itself carries no traffic:
// the job's collectives are the engine's (NCCL/Gloo), and rank 0's address
// reaches the others through the environment or a rendezvous file.
#ifndef KP_LAUNCHER_MPI_MPI_PLAN_H_
#define KP_LAUNCHER_MPI_MPI_PLAN_H_

#include <cstdint>
#include <string>

#include "launcher/mpi/mpi_env.h"
#include "launcher/slurm/job_shape.h"
#include "launcher/slurm/ports.h"
#include "launcher/slurm/resolve.h"

namespace kp::launcher {

struct MpiPlanOptions {
  // HOST:PORT of a running coordinator (or KP_COORDINATOR): no rank starts one.
  std::string coordinator;
  // Rank 0's address, instead of resolving its host name.
  std::string coordinator_address;
  // A file on a filesystem every host shares where rank 0 publishes its
  // coordinator address and the others wait for it.
  std::string rendezvous_file;
  // > 0: a fixed port block instead of the one derived from the job key.
  int port_base = 0;
  bool resume = false;
  int grace_seconds = 90;
};

struct MpiPlan {
  int rank = 0;
  int world = 0;
  int local_rank = 0;
  bool start_coordinator = false;
  bool submit = false;
  // Known up front on rank 0, or everywhere when --coordinator is given;
  // otherwise empty until the rendezvous (AwaitCoordinator) fills it.
  std::string coordinator_target;
  bool needs_rendezvous = false;
  JobPorts ports;
  int agent_port = 0;
  int device = 0;  // this agent's one device: the local rank
  bool resume = false;
  int grace_seconds = 0;
};

// Fails before anything starts when `mpirun -np` differs from the job's
// dp x cp (one process per rank), or when ranks other than 0 would have no way
// to find the coordinator (neither --coordinator nor a rendezvous file).
// `hostname` is this host's name (resolved on rank 0 unless overridden).
absl::StatusOr<MpiPlan> MakeMpiPlan(const MpiTask& task, const JobShape& shape,
                                    const MpiPlanOptions& options, const std::string& hostname,
                                    const Resolver& resolve = ResolveHost);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_MPI_MPI_PLAN_H_
