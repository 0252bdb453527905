#include "launcher/k8s/render_cli.h"

#include <cstdio>
#include <filesystem>

#include "launcher/slurm/job_shape.h"
#include "runtime/common/files.h"

namespace kp::launcher {

void AddK8sRenderFlags(CLI::App* app, K8sRenderCommand* c) {
  K8sOptions& o = c->options;
  app->add_option("job", c->job_file, "the job file (YAML)")->required();
  app->add_option("-o,--output", c->output, "write the manifests here (default: stdout)");
  app->add_option("--output-dir", c->output_dir, "write one file per object into this folder");
  app->add_option("--name", o.name, "name of the job's objects (default: the job file's stem)");
  app->add_option("-n,--namespace", o.namespace_name, "Kubernetes namespace")->capture_default_str();
  app->add_option("--image", o.image, "the kp image (deploy/k8s/Dockerfile)")->required();
  app->add_option("--image-pull-policy", o.image_pull_policy)->capture_default_str();
  app->add_option("--nodes", o.nodes, "pods, one per node (default: ceil(dp*cp / gpus per node))");
  app->add_option("--gpus-per-node", o.gpus_per_node, "nvidia.com/gpu per pod; 0 = CPU pods")
      ->capture_default_str();
  app->add_option("--cpu", o.cpu, "CPU request per pod")->capture_default_str();
  app->add_option("--memory", o.memory, "memory request and limit per pod")->capture_default_str();
  app->add_option("--shm-size", o.shm_size, "/dev/shm size (NCCL)")->capture_default_str();
  app->add_option("--checkpoint-size", o.checkpoint_size, "checkpoint volume (ReadWriteMany)")
      ->capture_default_str();
  app->add_option("--state-size", o.state_size, "coordinator state volume")->capture_default_str();
  app->add_option("--storage-class", o.storage_class, "storage class of both volumes");
  app->add_option("--token-secret", o.token_secret, "Secret holding the bearer token (key: token)")
      ->capture_default_str();
  app->add_option("--grace-seconds", o.grace_seconds, "pod termination grace period")
      ->capture_default_str();
  app->add_option("--coordinator-port", o.coordinator_port)->capture_default_str();
  app->add_option("--metrics-port", o.metrics_port)->capture_default_str();
  app->add_option("--agent-port", o.agent_port)->capture_default_str();
  app->add_option("--env-wrapper", o.env_wrapper,
                  "prefix of every command in the image; empty: run binaries directly")
      ->capture_default_str();
}

int RunK8sRender(K8sRenderCommand c) {
  auto text = ReadFile(c.job_file);
  if (!text.ok()) {
    std::fprintf(stderr, "kprun k8s render: %s\n", text.status().ToString().c_str());
    return 2;
  }
  auto shape = ParseJobShape(*text, c.job_file);
  if (!shape.ok()) {
    std::fprintf(stderr, "kprun k8s render: %s\n", shape.status().ToString().c_str());
    return 2;
  }
  if (c.options.name.empty()) {
    std::string stem = shape->name.empty() ? std::filesystem::path(c.job_file).stem().string()
                                           : shape->name;
    for (char& ch : stem) {
      ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (ch == '_' || ch == '.') ch = '-';
    }
    c.options.name = stem;
  }
  if (!c.output_dir.empty()) {
    auto docs = BuildManifests(c.options, *shape, *text);
    absl::Status s = docs.ok() ? WriteManifests(*docs, c.output_dir) : docs.status();
    if (!s.ok()) {
      std::fprintf(stderr, "kprun k8s render: %s\n", s.ToString().c_str());
      return 2;
    }
    return 0;
  }
  auto yaml = RenderManifests(c.options, *shape, *text);
  if (!yaml.ok()) {
    std::fprintf(stderr, "kprun k8s render: %s\n", yaml.status().ToString().c_str());
    return 2;
  }
  if (c.output.empty() || c.output == "-") {
    std::fwrite(yaml->data(), 1, yaml->size(), stdout);
    return 0;
  }
  if (absl::Status s = WriteFileAtomically(c.output, *yaml); !s.ok()) {
    std::fprintf(stderr, "kprun k8s render: %s\n", s.ToString().c_str());
    return 2;
  }
  return 0;
}

}  // namespace kp::launcher
