#include "launcher/slurm/launch_flags.h"

#include <signal.h>

#include <cstdio>

#include "launcher/job_file.h"

namespace kp::launcher {

void AddCommonLaunchFlags(CLI::App* cmd, LaunchOptions* launch) {
  cmd->add_option("job", launch->job_file, "job file (YAML)")->required();
  cmd->add_option("--worker_binary", launch->worker_binary, "worker program (default: kp-train next to kprun)");
  cmd->add_option("--worker_arg", launch->worker_args, "extra worker flag (repeatable)");
  cmd->add_option("--run_root", launch->run_root, "run directories go here (shared by all nodes)")
      ->capture_default_str();
  cmd->add_option("--config_root", launch->config_root, "root for config_path (default: .)");
  cmd->add_option("--data_root", launch->data_root, "root for data (default: .)");
  cmd->add_option("--checkpoint_root", launch->checkpoint_root,
                  "root for checkpoint.dir (default: RUN_ROOT/checkpoints)");
  cmd->add_option("--cpu_slots", launch->cpu_slots, "offer N CPU devices per node instead of GPUs");
  cmd->add_option("--stop_grace_ms", launch->stop_grace_ms, "SIGTERM to SIGKILL")->capture_default_str();
  cmd->add_flag("--quiet", launch->quiet, "only the final line");
}

int PrepareLaunch(const std::string& launcher, LaunchOptions* launch) {
  auto spec = LoadJobFile(launch->job_file);
  if (!spec.ok()) {
    std::fprintf(stderr, "kprun %s: %s\n", launcher.c_str(), spec.status().ToString().c_str());
    return 2;
  }
  launch->spec = *spec;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return 0;
}

}  // namespace kp::launcher
