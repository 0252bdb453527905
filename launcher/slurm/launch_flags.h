// kprun's common launch flags (job file, worker, roots), for the standalone
// kprun-slurm binary; kprun itself defines the same in launcher/main.cc.
#ifndef KP_LAUNCHER_SLURM_LAUNCH_FLAGS_H_
#define KP_LAUNCHER_SLURM_LAUNCH_FLAGS_H_

#include <CLI/CLI.hpp>

#include "launcher/launcher.h"

namespace kp::launcher {

void AddCommonLaunchFlags(CLI::App* cmd, LaunchOptions* launch);

// Loads the job file into launch->spec and blocks SIGINT/SIGTERM (before any
// thread starts) as RunClusterNode requires; returns a non-zero exit code on
// failure after printing why.
int PrepareLaunch(const std::string& launcher, LaunchOptions* launch);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_SLURM_LAUNCH_FLAGS_H_
