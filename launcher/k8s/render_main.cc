// kp-k8s-render: `kprun k8s render` as a binary of its own (the same flags),
// for tests and for machines that only render.
#include <CLI/CLI.hpp>

#include "launcher/k8s/render_cli.h"

int main(int argc, char** argv) {
  CLI::App app{"Render the Kubernetes manifests of a kp job (kubectl apply -f the output)"};
  kp::launcher::K8sRenderCommand command;
  kp::launcher::AddK8sRenderFlags(&app, &command);
  CLI11_PARSE(app, argc, argv);
  return kp::launcher::RunK8sRender(command);
}
