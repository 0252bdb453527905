// kprun-k8s: `kprun k8s render|run` as a binary of its own, with the same
// command line (`kprun-k8s k8s run JOB.yaml ...`), for tests.
#include <CLI/CLI.hpp>

#include "launcher/k8s/k8s_commands.h"
#include "runtime/common/logging.h"

int main(int argc, char** argv) {
  CLI::App app{"kprun-k8s: render and run kp jobs on Kubernetes"};
  std::string log_level = "warn";
  app.add_option("--log_level", log_level, "daemon log level")->capture_default_str();
  app.require_subcommand(1);
  kp::launcher::K8sCommands commands;
  kp::launcher::AddK8sCommands(app.add_subcommand("k8s", "Kubernetes"), &commands);
  CLI11_PARSE(app, argc, argv);
  kp::InitLogging({.role = "kprun-k8s", .level = log_level});
  return kp::launcher::RunK8sCommands(&commands);
}
