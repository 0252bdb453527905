#include "launcher/slurm/cluster_flags.h"

#include <gtest/gtest.h>

namespace kp::launcher {
namespace {

TEST(ClusterFlags, CommandLineWinsOverEnvironment) {
  CLI::App app;
  ClusterFlags flags;
  AddClusterFlags(&app, &flags, "slurm");
  const char* argv[] = {"kprun", "--coordinator-address", "10.0.0.1", "--grace-seconds", "30"};
  app.parse(5, const_cast<char**>(argv));
  ASSERT_TRUE(ApplyClusterEnv(MapEnvironment({{"KP_COORDINATOR_ADDRESS", "10.9.9.9"},
                                              {"KP_NODE_ADDRESS", "127.0.0.1"},
                                              {"KP_GRACE_SECONDS", "200"},
                                              {"KP_PORT_BASE", "30000"},
                                              {"KP_RESUME", "1"}}),
                              &flags)
                  .ok());
  EXPECT_EQ(flags.coordinator_address, "10.0.0.1");
  EXPECT_EQ(flags.node_address, "127.0.0.1");
  EXPECT_EQ(flags.grace_seconds, 30);
  EXPECT_EQ(flags.port_base, 30000);
  EXPECT_TRUE(flags.resume);
}

TEST(ClusterFlags, BadEnvironmentNamesTheVariable) {
  ClusterFlags flags;
  auto st = ApplyClusterEnv(MapEnvironment({{"KP_PORT_BASE", "x"}}), &flags);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("KP_PORT_BASE"), std::string::npos);
  st = ApplyClusterEnv(MapEnvironment({{"KP_PORT_BASE", "65530"}}), &flags);
  ASSERT_FALSE(st.ok());
}

TEST(ClusterFlags, EachLauncherGetsItsFlags) {
  CLI::App mpi;
  ClusterFlags f1;
  AddClusterFlags(&mpi, &f1, "mpi");
  const char* argv[] = {"kprun", "--rendezvous-file", "/shared/x"};
  mpi.parse(3, const_cast<char**>(argv));
  EXPECT_EQ(f1.rendezvous_file, "/shared/x");
  CLI::App k8s;
  ClusterFlags f2;
  AddClusterFlags(&k8s, &f2, "k8s");
  const char* argv2[] = {"kprun", "--nodes", "3", "--coordinator", "svc:1"};
  k8s.parse(5, const_cast<char**>(argv2));
  EXPECT_EQ(f2.nodes, 3);
  EXPECT_EQ(f2.coordinator, "svc:1");
}

}  // namespace
}  // namespace kp::launcher
