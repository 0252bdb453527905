// `kprun k8s render`'s command line, shared by kprun and the standalone
// kp-k8s-render binary so the flags are defined once.
#ifndef KP_LAUNCHER_K8S_RENDER_CLI_H_
#define KP_LAUNCHER_K8S_RENDER_CLI_H_

#include <string>

#include <CLI/CLI.hpp>

#include "launcher/k8s/render.h"

namespace kp::launcher {

struct K8sRenderCommand {
  std::string job_file;
  std::string output;      // file; "-" or empty: stdout
  std::string output_dir;  // one file per object instead
  K8sOptions options;
};

// Adds the positional JOB.yaml and every render flag to `app`.
void AddK8sRenderFlags(CLI::App* app, K8sRenderCommand* command);

// Reads the job file, renders, writes. Returns the process exit code and
// prints errors (naming the flag or field) to stderr.
int RunK8sRender(K8sRenderCommand command);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_K8S_RENDER_CLI_H_
