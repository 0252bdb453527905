#include "launcher/k8s/k8s_commands.h"

#include "launcher/k8s/k8s_launcher.h"
#include "launcher/slurm/launch_flags.h"

namespace kp::launcher {

void AddK8sCommands(CLI::App* k8s, K8sCommands* c) {
  k8s->require_subcommand(1);
  c->render = k8s->add_subcommand("render", "write the Kubernetes manifests of a job (kubectl apply -f them)");
  AddK8sRenderFlags(c->render, &c->render_command);
  c->run = k8s->add_subcommand("run", "the entry point of a rendered Job's pods");
  AddCommonLaunchFlags(c->run, &c->launch);
  AddClusterFlags(c->run, &c->flags, "k8s");
}

int RunK8sCommands(K8sCommands* c) {
  if (c->render->parsed()) return RunK8sRender(c->render_command);
  if (int rc = PrepareLaunch("k8s", &c->launch); rc != 0) return rc;
  return NewK8sLauncher(&c->flags)->Launch(c->launch);
}

}  // namespace kp::launcher
