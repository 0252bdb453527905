// `mpirun -np N kprun mpi JOB.yaml`: every MPI process runs an agent owning
// one device (its local rank's GPU, or one CPU slot); rank 0 also runs the
// coordinator and submits. Rank 0 publishes the coordinator's address in
// --rendezvous-file (or everyone is given --coordinator). MPI is not
// initialised: only mpirun's environment is read.
#ifndef KP_LAUNCHER_MPI_MPI_LAUNCHER_H_
#define KP_LAUNCHER_MPI_MPI_LAUNCHER_H_

#include <memory>

#include "launcher/launcher.h"
#include "launcher/slurm/cluster_flags.h"

namespace kp::launcher {

std::unique_ptr<Launcher> NewMpiLauncher(const ClusterFlags* flags);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_MPI_MPI_LAUNCHER_H_
