// `kprun k8s render ...` and `kprun k8s run ...` as CLI11 subcommands of a
// `k8s` command, so kprun and the standalone kprun-k8s define them once.
#ifndef KP_LAUNCHER_K8S_K8S_COMMANDS_H_
#define KP_LAUNCHER_K8S_K8S_COMMANDS_H_

#include <CLI/CLI.hpp>

#include "launcher/k8s/render_cli.h"
#include "launcher/launcher.h"
#include "launcher/slurm/cluster_flags.h"

namespace kp::launcher {

struct K8sCommands {
  CLI::App* render = nullptr;
  CLI::App* run = nullptr;
  K8sRenderCommand render_command;
  LaunchOptions launch;
  ClusterFlags flags;
};

// Adds `render` and `run` under `k8s` (one of them is required).
void AddK8sCommands(CLI::App* k8s, K8sCommands* commands);

// After parsing: runs whichever was given; returns the exit status.
int RunK8sCommands(K8sCommands* commands);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_K8S_K8S_COMMANDS_H_
