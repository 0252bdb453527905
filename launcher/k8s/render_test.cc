#include "launcher/k8s/render.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

namespace kp::launcher {
namespace {

using Json = nlohmann::ordered_json;

const char kJob[] = "name: demo\ndp: 4\ncp: 2\nsteps: 10\n";

K8sOptions Options() {
  K8sOptions o;
  o.name = "demo";
  o.namespace_name = "ml";
  o.image = "registry.example/kp:1.0";
  o.gpus_per_node = 4;
  return o;
}

JobShape Shape(int dp, int cp) {
  JobShape s;
  s.dp = dp;
  s.cp = cp;
  return s;
}

const Json& Find(const std::vector<Json>& docs, const std::string& kind, const std::string& name) {
  for (const Json& d : docs) {
    if (d["kind"] == kind && d["metadata"]["name"] == name) return d;
  }
  ADD_FAILURE() << "no " << kind << " " << name;
  static const Json kNull;
  return kNull;
}

TEST(K8sRender, IndexedJobWithHeadlessSubdomain) {
  auto docs = BuildManifests(Options(), Shape(4, 2), kJob);
  ASSERT_TRUE(docs.ok()) << docs.status();
  ASSERT_EQ(docs->size(), 7u);
  for (const Json& d : *docs) EXPECT_EQ(d["metadata"]["namespace"], "ml");

  const Json& job = Find(*docs, "Job", "demo");
  EXPECT_EQ(job["spec"]["completionMode"], "Indexed");
  EXPECT_EQ(job["spec"]["completions"], 2);  // 8 ranks / 4 GPUs per node
  EXPECT_EQ(job["spec"]["parallelism"], 2);
  const Json& pod = job["spec"]["template"]["spec"];
  const Json& headless = Find(*docs, "Service", "demo-workers");
  EXPECT_EQ(pod["subdomain"], headless["metadata"]["name"]);
  EXPECT_EQ(headless["spec"]["clusterIP"], "None");
  // The headless Service selects exactly the Job's pods.
  for (auto& [k, v] : headless["spec"]["selector"].items()) {
    EXPECT_EQ(job["spec"]["template"]["metadata"]["labels"][k], v) << k;
  }
  const Json& container = pod["containers"][0];
  EXPECT_EQ(container["resources"]["limits"]["nvidia.com/gpu"], 4);
  EXPECT_EQ(container["image"], "registry.example/kp:1.0");
  EXPECT_EQ(pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
               ["topologyKey"],
            "kubernetes.io/hostname");
  EXPECT_EQ(pod["terminationGracePeriodSeconds"], 180);
  bool shm = false;
  for (const Json& v : pod["volumes"]) {
    if (v["name"] == "dshm") {
      shm = true;
      EXPECT_EQ(v["emptyDir"]["medium"], "Memory");
    }
  }
  EXPECT_TRUE(shm);
  // Every pod dials the coordinator's Service by its cluster DNS name.
  std::string args = container["args"].dump();
  EXPECT_NE(args.find("--coordinator=demo-coordinator.ml.svc:50051"), std::string::npos) << args;

  const Json& cm = Find(*docs, "ConfigMap", "demo-job");
  EXPECT_EQ(cm["data"]["job.yaml"], kJob);
  const Json& deployment = Find(*docs, "Deployment", "demo-coordinator");
  EXPECT_EQ(deployment["spec"]["replicas"], 1);
  EXPECT_EQ(deployment["spec"]["strategy"]["type"], "Recreate");
  EXPECT_EQ(deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"],
            50051);
  Find(*docs, "Service", "demo-coordinator");
  EXPECT_EQ(Find(*docs, "PersistentVolumeClaim", "demo-checkpoints")["spec"]["accessModes"][0],
            "ReadWriteMany");
  Find(*docs, "PersistentVolumeClaim", "demo-coordinator");
}

TEST(K8sRender, CpuPodsNeedNodes) {
  K8sOptions o = Options();
  o.gpus_per_node = 0;
  auto docs = BuildManifests(o, Shape(2, 1), kJob);
  ASSERT_FALSE(docs.ok());
  EXPECT_NE(docs.status().message().find("--nodes"), std::string::npos);
  o.nodes = 2;
  docs = BuildManifests(o, Shape(2, 1), kJob);
  ASSERT_TRUE(docs.ok()) << docs.status();
  const Json& c = Find(*docs, "Job", "demo")["spec"]["template"]["spec"]["containers"][0];
  EXPECT_FALSE(c["resources"]["limits"].contains("nvidia.com/gpu"));
  EXPECT_NE(c["args"].dump().find("--cpu_slots=1"), std::string::npos);
}

TEST(K8sRender, TooFewGpus) {
  K8sOptions o = Options();
  o.nodes = 1;
  auto docs = BuildManifests(o, Shape(4, 2), kJob);
  ASSERT_FALSE(docs.ok());
  EXPECT_EQ(docs.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(docs.status().message().find("1 node(s) x 4 GPU(s) = 4"), std::string::npos)
      << docs.status();
}

TEST(K8sRender, BadOptionsNameTheFlag) {
  struct Case {
    std::function<void(K8sOptions&)> edit;
    std::string named;
  };
  for (const Case& c : std::vector<Case>{
           {[](K8sOptions& o) { o.name = "Demo"; }, "--name 'Demo'"},
           {[](K8sOptions& o) { o.name = std::string(41, 'a'); }, "--name"},
           {[](K8sOptions& o) { o.namespace_name = "a_b"; }, "--namespace 'a_b'"},
           {[](K8sOptions& o) { o.image = ""; }, "--image is required"},
           {[](K8sOptions& o) { o.shm_size = "16GB"; }, "--shm-size '16GB'"},
           {[](K8sOptions& o) { o.memory = "lots"; }, "--memory 'lots'"},
           {[](K8sOptions& o) { o.image_pull_policy = "Sometimes"; }, "--image-pull-policy"}}) {
    K8sOptions o = Options();
    c.edit(o);
    auto docs = BuildManifests(o, Shape(1, 1), kJob);
    ASSERT_FALSE(docs.ok()) << c.named;
    EXPECT_NE(docs.status().message().find(c.named), std::string::npos) << docs.status();
  }
}

TEST(K8sRender, StreamParsesBackToTheSameObjects) {
  auto docs = BuildManifests(Options(), Shape(4, 2), kJob);
  auto text = RenderManifests(Options(), Shape(4, 2), kJob);
  ASSERT_TRUE(text.ok()) << text.status();
  std::vector<YAML::Node> parsed = YAML::LoadAll(*text);
  ASSERT_EQ(parsed.size(), docs->size());
  for (size_t i = 0; i < parsed.size(); ++i) {
    EXPECT_EQ(parsed[i]["kind"].as<std::string>(), (*docs)[i]["kind"].get<std::string>());
    EXPECT_EQ(parsed[i]["metadata"]["name"].as<std::string>(),
              (*docs)[i]["metadata"]["name"].get<std::string>());
  }
  EXPECT_EQ(parsed[0]["data"]["job.yaml"].as<std::string>(), kJob);
}

}  // namespace
}  // namespace kp::launcher
