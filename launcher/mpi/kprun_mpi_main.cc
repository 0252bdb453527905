// kprun-mpi: `kprun mpi` as a binary of its own (same flags), for tests.
#include <CLI/CLI.hpp>

#include "launcher/mpi/mpi_launcher.h"
#include "launcher/slurm/cluster_flags.h"
#include "launcher/slurm/launch_flags.h"
#include "runtime/common/logging.h"

int main(int argc, char** argv) {
  CLI::App app{"kprun-mpi: run a kp job under mpirun (mpirun -np N kprun-mpi JOB.yaml --rendezvous-file F)"};
  kp::launcher::LaunchOptions launch;
  kp::launcher::ClusterFlags flags;
  std::string log_level = "warn";
  app.add_option("--log_level", log_level, "daemon log level")->capture_default_str();
  kp::launcher::AddCommonLaunchFlags(&app, &launch);
  kp::launcher::AddClusterFlags(&app, &flags, "mpi");
  CLI11_PARSE(app, argc, argv);
  kp::InitLogging({.role = "kprun-mpi", .level = log_level});
  if (int rc = kp::launcher::PrepareLaunch("mpi", &launch); rc != 0) return rc;
  return kp::launcher::NewMpiLauncher(&flags)->Launch(launch);
}
