#include "launcher/k8s/k8s_launcher.h"

#include <gtest/gtest.h>

#include "launcher/slurm/node_runner.h"

namespace kp::launcher {
namespace {

LaunchOptions Options(int dp) {
  LaunchOptions o;
  o.spec.set_dp(dp);
  o.spec.set_cp(1);
  o.cpu_slots = 1;
  return o;
}

ClusterFlags Flags() {
  ClusterFlags f;
  f.coordinator = "demo-coordinator.ml.svc:50051";
  f.nodes = 2;
  return f;
}

std::map<std::string, std::string> PodEnv(const std::string& index) {
  return {{"JOB_COMPLETION_INDEX", index},
          {"KP_TOKEN_FILE", "/etc/kp/token/token"},
          {"KP_LAUNCH_KEY", "0b5e6c1a-uid"}};
}

TEST(K8sLauncher, PodRoles) {
  for (const char* index : {"0", "1"}) {
    auto role = K8sNodeRole(Options(2), Flags(), MapEnvironment(PodEnv(index)));
    ASSERT_TRUE(role.ok()) << role.status();
    EXPECT_EQ(role->node_index, std::stoi(index));
    EXPECT_EQ(role->submit, role->node_index == 0);
    EXPECT_FALSE(role->start_coordinator);  // the Deployment runs it
    EXPECT_EQ(role->coordinator_target, "demo-coordinator.ml.svc:50051");
    EXPECT_EQ(role->token_file, "/etc/kp/token/token");
    EXPECT_EQ(AgentIdFor(*role, 1), "k8s-0b5e6c1a-uid-node1");
  }
}

TEST(K8sLauncher, MissingPiecesAreNamed) {
  struct Case {
    std::string drop;
    std::string named;
  };
  for (const Case& c : std::vector<Case>{{"JOB_COMPLETION_INDEX", "JOB_COMPLETION_INDEX is not set"},
                                         {"KP_TOKEN_FILE", "KP_TOKEN_FILE"},
                                         {"KP_LAUNCH_KEY", "KP_LAUNCH_KEY"}}) {
    auto env = PodEnv("0");
    env.erase(c.drop);
    auto role = K8sNodeRole(Options(2), Flags(), MapEnvironment(env));
    ASSERT_FALSE(role.ok()) << c.drop;
    EXPECT_NE(role.status().message().find(c.named), std::string::npos) << role.status();
  }
  auto role = K8sNodeRole(Options(2), Flags(), MapEnvironment(PodEnv("2")));
  ASSERT_FALSE(role.ok());
  EXPECT_NE(role.status().message().find("not below --nodes 2"), std::string::npos);
  role = K8sNodeRole(Options(3), Flags(), MapEnvironment(PodEnv("0")));
  ASSERT_FALSE(role.ok());
  EXPECT_EQ(role.status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace kp::launcher
