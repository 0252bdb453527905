// kprun-slurm: `kprun slurm` as a binary of its own (same flags), so the
// Slurm launcher runs and is tested without the rest of kprun.
#include <CLI/CLI.hpp>

#include "launcher/slurm/cluster_flags.h"
#include "launcher/slurm/launch_flags.h"
#include "launcher/slurm/slurm_launcher.h"
#include "runtime/common/logging.h"

int main(int argc, char** argv) {
  CLI::App app{"kprun-slurm: run a kp job inside a Slurm allocation (srun --ntasks-per-node=1 kprun-slurm JOB.yaml)"};
  kp::launcher::LaunchOptions launch;
  kp::launcher::ClusterFlags flags;
  std::string log_level = "warn";
  app.add_option("--log_level", log_level, "daemon log level")->capture_default_str();
  kp::launcher::AddCommonLaunchFlags(&app, &launch);
  kp::launcher::AddClusterFlags(&app, &flags, "slurm");
  CLI11_PARSE(app, argc, argv);
  kp::InitLogging({.role = "kprun-slurm", .level = log_level});
  if (int rc = kp::launcher::PrepareLaunch("slurm", &launch); rc != 0) return rc;
  return kp::launcher::NewSlurmLauncher(&flags)->Launch(launch);
}
