#include "launcher/k8s/render.h"

#include <algorithm>
#include <cctype>
#include <regex>

#include "absl/strings/str_cat.h"
#include "launcher/k8s/yaml_writer.h"
#include "launcher/slurm/plan.h"
#include "runtime/common/files.h"

namespace kp::launcher {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kCheckpointMount[] = "/checkpoints";
constexpr char kJobMount[] = "/etc/kp/job";
constexpr char kTokenMount[] = "/etc/kp/token";
constexpr char kStateMount[] = "/var/lib/kp";

absl::Status CheckQuantity(const std::string& value, const char* option) {
  static const std::regex kQuantity(R"(^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$)");
  if (!std::regex_match(value, kQuantity)) {
    return absl::InvalidArgumentError(absl::StrCat(
        option, " '", value, "' is not a Kubernetes quantity (e.g. 16Gi, 500m, 4)"));
  }
  return absl::OkStatus();
}

absl::Status CheckOptions(const K8sOptions& o) {
  static const std::regex kLabel(R"(^[a-z]([-a-z0-9]*[a-z0-9])?$)");
  if (o.name.empty() || o.name.size() > 40 || !std::regex_match(o.name, kLabel)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--name '", o.name,
                     "' must be a DNS label: lower-case letters, digits and '-', starting "
                     "with a letter, at most 40 characters (pod names append to it)"));
  }
  if (o.namespace_name.empty() || o.namespace_name.size() > 63 ||
      !std::regex_match(o.namespace_name, std::regex(R"(^[a-z0-9]([-a-z0-9]*[a-z0-9])?$)"))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--namespace '", o.namespace_name, "' is not a DNS label"));
  }
  if (o.image.empty()) {
    return absl::InvalidArgumentError(
        "--image is required: the kp image (deploy/k8s/Dockerfile) in a registry the "
        "cluster can pull from");
  }
  if (o.image.find_first_of(" \t\n") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--image '", o.image, "' has whitespace"));
  }
  if (o.image_pull_policy != "Always" && o.image_pull_policy != "IfNotPresent" &&
      o.image_pull_policy != "Never") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--image-pull-policy '", o.image_pull_policy, "' is not Always, IfNotPresent or Never"));
  }
  if (o.nodes < 0 || o.gpus_per_node < 0 || o.grace_seconds < 1) {
    return absl::InvalidArgumentError("--nodes, --gpus-per-node must be >= 0, --grace-seconds >= 1");
  }
  KP_RETURN_IF_ERROR(CheckQuantity(o.cpu, "--cpu"));
  KP_RETURN_IF_ERROR(CheckQuantity(o.memory, "--memory"));
  KP_RETURN_IF_ERROR(CheckQuantity(o.shm_size, "--shm-size"));
  KP_RETURN_IF_ERROR(CheckQuantity(o.checkpoint_size, "--checkpoint-size"));
  KP_RETURN_IF_ERROR(CheckQuantity(o.state_size, "--state-size"));
  for (int port : {o.coordinator_port, o.metrics_port, o.agent_port}) {
    if (port < 1 || port > 65535) return absl::InvalidArgumentError("ports must be in 1..65535");
  }
  return absl::OkStatus();
}

Json Metadata(const K8sOptions& o, const std::string& name, const std::string& component) {
  return Json{{"name", name},
              {"namespace", o.namespace_name},
              {"labels",
               {{"app.kubernetes.io/name", "kp"},
                {"app.kubernetes.io/instance", o.name},
                {"app.kubernetes.io/component", component}}}};
}

Json Selector(const K8sOptions& o, const std::string& component) {
  return Json{{"app.kubernetes.io/instance", o.name}, {"app.kubernetes.io/component", component}};
}

Json Pvc(const K8sOptions& o, const std::string& name, const std::string& component,
         const std::string& mode, const std::string& size) {
  Json spec = {{"accessModes", Json::array({mode})},
               {"resources", {{"requests", {{"storage", size}}}}}};
  if (!o.storage_class.empty()) spec["storageClassName"] = o.storage_class;
  return Json{{"apiVersion", "v1"},
              {"kind", "PersistentVolumeClaim"},
              {"metadata", Metadata(o, name, component)},
              {"spec", spec}};
}

Json TokenVolume(const K8sOptions& o) {
  return Json{{"name", "token"},
              {"secret", {{"secretName", o.token_secret}, {"defaultMode", 0400}}}};
}

Json GrpcProbe(int port, int period, int failures) {
  return Json{{"grpc", {{"port", port}}},
              {"periodSeconds", period},
              {"failureThreshold", failures},
              {"timeoutSeconds", 5}};
}

Json Command(const K8sOptions& o, const std::string& binary) {
  if (o.env_wrapper.empty()) return Json::array({binary});
  return Json::array({o.env_wrapper, binary});
}

}  // namespace

absl::StatusOr<std::vector<Json>> BuildManifests(const K8sOptions& options_in,
                                                 const JobShape& shape,
                                                 const std::string& job_yaml) {
  K8sOptions o = options_in;
  KP_RETURN_IF_ERROR(CheckOptions(o));
  if (o.nodes == 0) {
    if (o.gpus_per_node == 0) {
      return absl::InvalidArgumentError(
          "--nodes is required for CPU pods (--gpus-per-node 0): with GPUs it defaults to "
          "ceil(dp x cp / gpus per node)");
    }
    o.nodes = static_cast<int>((shape.world() + o.gpus_per_node - 1) / o.gpus_per_node);
  }
  // CPU pods: each runs as many workers as the job needs from it.
  const int cpu_slots = static_cast<int>((shape.world() + o.nodes - 1) / o.nodes);
  KP_RETURN_IF_ERROR(CheckShapeFits(shape, o.nodes, o.gpus_per_node, cpu_slots,
                                    "render with more --nodes or --gpus-per-node"));

  const std::string coordinator = absl::StrCat(o.name, "-coordinator");
  const std::string workers = absl::StrCat(o.name, "-workers");
  const std::string coordinator_target =
      absl::StrCat(coordinator, ".", o.namespace_name, ".svc:", o.coordinator_port);
  std::vector<Json> docs;

  docs.push_back(Json{{"apiVersion", "v1"},
                      {"kind", "ConfigMap"},
                      {"metadata", Metadata(o, absl::StrCat(o.name, "-job"), "job")},
                      {"data", {{o.job_file_name, job_yaml}}}});
  docs.push_back(Pvc(o, absl::StrCat(o.name, "-checkpoints"), "checkpoints", "ReadWriteMany",
                     o.checkpoint_size));
  docs.push_back(Pvc(o, coordinator, "coordinator", "ReadWriteOnce", o.state_size));

  // The coordinator: one replica, Recreate (SQLite on a RWO volume must not
  // be opened by two pods during a rollout).
  Json coordinator_container = {
      {"name", "coordinator"},
      {"image", o.image},
      {"imagePullPolicy", o.image_pull_policy},
      {"command", Command(o, "kp-coordinator")},
      {"args",
       Json::array({absl::StrCat("--listen=0.0.0.0:", o.coordinator_port),
                    absl::StrCat("--db=", kStateMount, "/coordinator.db"),
                    absl::StrCat("--token_file=", kTokenMount, "/token"),
                    "--metrics_host=0.0.0.0", absl::StrCat("--metrics_port=", o.metrics_port),
                    absl::StrCat("--checkpoint_root=", kCheckpointMount),
                    absl::StrCat("--config_root=", kJobMount),
                    absl::StrCat("--advertise=", coordinator_target)})},
      {"ports", Json::array({Json{{"name", "grpc"}, {"containerPort", o.coordinator_port}},
                             Json{{"name", "metrics"}, {"containerPort", o.metrics_port}}})},
      {"readinessProbe", GrpcProbe(o.coordinator_port, 5, 3)},
      {"livenessProbe", GrpcProbe(o.coordinator_port, 10, 6)},
      {"resources",
       {{"requests", {{"cpu", "1"}, {"memory", "1Gi"}}}, {"limits", {{"memory", "2Gi"}}}}},
      {"volumeMounts",
       Json::array({Json{{"name", "state"}, {"mountPath", kStateMount}},
                    Json{{"name", "token"}, {"mountPath", kTokenMount}, {"readOnly", true}},
                    Json{{"name", "checkpoints"}, {"mountPath", kCheckpointMount}},
                    Json{{"name", "job"}, {"mountPath", kJobMount}, {"readOnly", true}}})}};
  docs.push_back(Json{
      {"apiVersion", "apps/v1"},
      {"kind", "Deployment"},
      {"metadata", Metadata(o, coordinator, "coordinator")},
      {"spec",
       {{"replicas", 1},
        {"strategy", {{"type", "Recreate"}}},
        {"selector", {{"matchLabels", Selector(o, "coordinator")}}},
        {"template",
         {{"metadata", {{"labels", Metadata(o, coordinator, "coordinator")["labels"]}}},
          {"spec",
           {{"terminationGracePeriodSeconds", 30},
            {"containers", Json::array({coordinator_container})},
            {"volumes",
             Json::array(
                 {Json{{"name", "state"},
                       {"persistentVolumeClaim", {{"claimName", coordinator}}}},
                  TokenVolume(o),
                  Json{{"name", "checkpoints"},
                       {"persistentVolumeClaim",
                        {{"claimName", absl::StrCat(o.name, "-checkpoints")}}}},
                  Json{{"name", "job"},
                       {"configMap", {{"name", absl::StrCat(o.name, "-job")}}}}})}}}}}}}});
  docs.push_back(Json{
      {"apiVersion", "v1"},
      {"kind", "Service"},
      {"metadata", Metadata(o, coordinator, "coordinator")},
      {"spec",
       {{"selector", Selector(o, "coordinator")},
        {"ports", Json::array({Json{{"name", "grpc"},
                                    {"port", o.coordinator_port},
                                    {"targetPort", "grpc"}},
                               Json{{"name", "metrics"},
                                    {"port", o.metrics_port},
                                    {"targetPort", "metrics"}}})}}}});
  // Headless: gives every pod of the Job a DNS name, ready or not, so agents
  // and workers reach each other before the job is running.
  docs.push_back(Json{{"apiVersion", "v1"},
                      {"kind", "Service"},
                      {"metadata", Metadata(o, workers, "worker")},
                      {"spec",
                       {{"clusterIP", "None"},
                        {"publishNotReadyAddresses", true},
                        {"selector", Selector(o, "worker")},
                        {"ports", Json::array({Json{{"name", "agent"},
                                                    {"port", o.agent_port}}})}}}});

  Json limits = {{"memory", o.memory}};
  Json requests = {{"cpu", o.cpu}, {"memory", o.memory}};
  if (o.gpus_per_node > 0) {
    limits["nvidia.com/gpu"] = o.gpus_per_node;
    requests["nvidia.com/gpu"] = o.gpus_per_node;
  }
  // The workers' grace is shorter than the pod's so kprun still reports
  // after they stopped.
  Json args = Json::array({"k8s", "run", absl::StrCat(kJobMount, "/", o.job_file_name),
                           absl::StrCat("--coordinator=", coordinator_target),
                           absl::StrCat("--nodes=", o.nodes),
                           absl::StrCat("--grace-seconds=", o.grace_seconds - o.grace_seconds / 4),
                           absl::StrCat("--config_root=", kJobMount),
                           absl::StrCat("--checkpoint_root=", kCheckpointMount),
                           absl::StrCat("--run_root=", kCheckpointMount, "/runs")});
  if (o.gpus_per_node == 0) args.push_back(absl::StrCat("--cpu_slots=", cpu_slots));
  Json worker_container = {
      {"name", "kp"},
      {"image", o.image},
      {"imagePullPolicy", o.image_pull_policy},
      {"command", Command(o, "kprun")},
      {"args", args},
      {"env",
       Json::array({Json{{"name", "KP_NODE_ADDRESS"},
                         {"valueFrom", {{"fieldRef", {{"fieldPath", "status.podIP"}}}}}},
                    // Tells this Job's kp job from earlier ones on the coordinator.
                    Json{{"name", "KP_LAUNCH_KEY"},
                         {"valueFrom",
                          {{"fieldRef", {{"fieldPath", "metadata.labels['controller-uid']"}}}}}},
                    Json{{"name", "KP_TOKEN_FILE"}, {"value", absl::StrCat(kTokenMount, "/token")}}})},
      {"ports", Json::array({Json{{"name", "agent"}, {"containerPort", o.agent_port}}})},
      {"resources", {{"requests", requests}, {"limits", limits}}},
      {"volumeMounts",
       Json::array({Json{{"name", "job"}, {"mountPath", kJobMount}, {"readOnly", true}},
                    Json{{"name", "token"}, {"mountPath", kTokenMount}, {"readOnly", true}},
                    Json{{"name", "checkpoints"}, {"mountPath", kCheckpointMount}},
                    Json{{"name", "dshm"}, {"mountPath", "/dev/shm"}}})}};
  Json worker_labels = Metadata(o, o.name, "worker")["labels"];
  docs.push_back(Json{
      {"apiVersion", "batch/v1"},
      {"kind", "Job"},
      {"metadata", Metadata(o, o.name, "worker")},
      {"spec",
       {{"completionMode", "Indexed"},
        {"completions", o.nodes},
        {"parallelism", o.nodes},
        // kp restarts failed generations itself (elastic jobs); a pod that
        // fails fails the Job instead of being replaced behind kp's back.
        {"backoffLimit", 0},
        {"template",
         {{"metadata", {{"labels", worker_labels}}},
          {"spec",
           {{"subdomain", workers},
            {"restartPolicy", "Never"},
            {"terminationGracePeriodSeconds", o.grace_seconds},
            {"affinity",
             {{"podAntiAffinity",
               {{"requiredDuringSchedulingIgnoredDuringExecution",
                 Json::array({Json{{"labelSelector", {{"matchLabels", Selector(o, "worker")}}},
                                   {"topologyKey", "kubernetes.io/hostname"}}})}}}}},
            {"containers", Json::array({worker_container})},
            {"volumes",
             Json::array(
                 {Json{{"name", "job"}, {"configMap", {{"name", absl::StrCat(o.name, "-job")}}}},
                  TokenVolume(o),
                  Json{{"name", "checkpoints"},
                       {"persistentVolumeClaim",
                        {{"claimName", absl::StrCat(o.name, "-checkpoints")}}}},
                  Json{{"name", "dshm"},
                       {"emptyDir", {{"medium", "Memory"}, {"sizeLimit", o.shm_size}}}}})}}}}}}}});
  return docs;
}

absl::StatusOr<std::string> RenderManifests(const K8sOptions& options, const JobShape& shape,
                                            const std::string& job_yaml) {
  KP_ASSIGN_OR_RETURN(std::vector<Json> docs, BuildManifests(options, shape, job_yaml));
  std::string out = absl::StrCat("# Rendered by `kprun k8s render` for job '", options.name,
                                 "'. Apply with: kubectl apply -f <this file>\n");
  for (const Json& doc : docs) absl::StrAppend(&out, "---\n", ToYaml(doc));
  return out;
}

absl::Status WriteManifests(const std::vector<Json>& manifests, const std::string& dir) {
  KP_RETURN_IF_ERROR(MakeDirs(dir));
  int i = 0;
  for (const Json& doc : manifests) {
    std::string kind = doc["kind"].get<std::string>();
    for (char& c : kind) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string path = absl::StrCat(dir, "/", i < 10 ? "0" : "", i, "-", kind, "-",
                                    doc["metadata"]["name"].get<std::string>(), ".yaml");
    KP_RETURN_IF_ERROR(WriteFileAtomically(path, ToYaml(doc)));
    ++i;
  }
  return absl::OkStatus();
}

}  // namespace kp::launcher
