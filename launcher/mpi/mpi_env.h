// One MPI process's place in its job, read from the environment mpirun gives
// it (OpenMPI, MPICH/Intel MPI's Hydra, MVAPICH, PMIx), without initialising
// MPI: kprun only needs ranks and a way to find rank 0.
#ifndef KP_LAUNCHER_MPI_MPI_ENV_H_
#define KP_LAUNCHER_MPI_MPI_ENV_H_

#include <cstdint>
#include <string>

#include "launcher/slurm/environment.h"
#include "runtime/common/status.h"

namespace kp::launcher {

struct MpiTask {
  int rank = 0;
  int size = 0;
  int local_rank = 0;  // among the processes on this host; picks the GPU
  int local_size = 0;  // 0 when the launcher does not say
  // "openmpi", "mvapich", "hydra" (MPICH, Intel MPI) or "pmix".
  std::string flavour;
  // Identifies this mpirun (OpenMPI's job id, the PMIx namespace, ...);
  // empty when the launcher gives none. Keys the coordinator rendezvous so a
  // stale file from an earlier run is never read, and derives the ports.
  std::string job_key;
};

// FAILED_PRECONDITION when no MPI launcher variables are set (not started by
// mpirun); INVALID_ARGUMENT naming the variable when they are inconsistent
// (rank outside the world, a size without a rank, non-numbers).
absl::StatusOr<MpiTask> ParseMpiTask(const EnvLookup& env);

// A stable number for ports: the key's FNV-1a hash (every rank computes the
// same one). Two concurrent mpiruns on one host share a port block with
// probability 1/768; give --port-base to rule it out.
int64_t JobKeyNumber(const std::string& job_key);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_MPI_MPI_ENV_H_
