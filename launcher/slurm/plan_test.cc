#include "launcher/slurm/plan.h"

#include <gtest/gtest.h>

namespace kp::launcher {
namespace {

SlurmTask Task(int nodes, int node_id, int gpus) {
  SlurmTask t;
  t.job_id = 777;
  for (int i = 0; i < nodes; ++i) t.nodes.push_back("gpu0" + std::to_string(i + 1));
  t.tasks_per_node.assign(nodes, 1);
  t.node_id = node_id;
  t.proc_id = node_id;
  t.ntasks = nodes;
  t.gpus_on_node = gpus;
  t.cpus_on_node = 4;
  return t;
}

absl::StatusOr<std::string> FakeDns(const std::string& host) {
  if (host == "gpu01") return std::string("10.0.0.1");
  if (host == "gpu02") return std::string("10.0.0.2");
  return absl::NotFoundError("cannot resolve host '" + host + "'");
}

JobShape Shape(int dp, int cp) {
  JobShape s;
  s.dp = dp;
  s.cp = cp;
  return s;
}

TEST(SlurmPlan, FirstNodeRunsTheCoordinator) {
  for (int node = 0; node < 2; ++node) {
    auto plan = MakeSlurmPlan(Task(2, node, 4), Shape(4, 2), {}, FakeDns);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->start_coordinator, node == 0);
    EXPECT_EQ(plan->submit, node == 0);
    EXPECT_EQ(plan->coordinator_target,
              "10.0.0.1:" + std::to_string(PortsForJob(777).coordinator));
    EXPECT_EQ(plan->node_address, node == 0 ? "10.0.0.1" : "10.0.0.2");
    EXPECT_EQ(plan->agent_port, PortsForJob(777).agent(node));
    EXPECT_EQ(plan->slot_kind, SlotKind::kGpu);
    EXPECT_EQ(plan->total_slots, 8);
  }
}

TEST(SlurmPlan, ExistingCoordinator) {
  SlurmPlanOptions options;
  options.coordinator = "coord.example:50051";
  auto plan = MakeSlurmPlan(Task(2, 0, 4), Shape(2, 1), options, FakeDns);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->start_coordinator);
  EXPECT_TRUE(plan->submit);
  EXPECT_EQ(plan->coordinator_target, "coord.example:50051");
  options.coordinator = "coord.example";
  plan = MakeSlurmPlan(Task(2, 0, 4), Shape(2, 1), options, FakeDns);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("HOST:PORT"), std::string::npos);
}

TEST(SlurmPlan, UnresolvableNamesNeedAnOverride) {
  SlurmTask task = Task(2, 1, 0);
  task.nodes = {"n1", "n2"};
  auto plan = MakeSlurmPlan(task, Shape(2, 1), {}, FakeDns);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(plan.status().message().find("--coordinator-address"), std::string::npos);
  SlurmPlanOptions options;
  options.coordinator_address = "127.0.0.1";
  options.node_address = "127.0.0.1";
  plan = MakeSlurmPlan(task, Shape(2, 1), options, FakeDns);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->coordinator_target,
            "127.0.0.1:" + std::to_string(PortsForJob(777).coordinator));
}

TEST(SlurmPlan, RealResolverHandlesLoopback) {
  SlurmTask task = Task(1, 0, 0);
  task.nodes = {"localhost"};
  auto plan = MakeSlurmPlan(task, Shape(1, 1), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->node_address == "127.0.0.1" || plan->node_address == "[::1]")
      << plan->node_address;
}

TEST(SlurmPlan, TooManyRanksForTheGpus) {
  auto plan = MakeSlurmPlan(Task(2, 0, 4), Shape(4, 4), {}, FakeDns);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  std::string msg(plan.status().message());
  EXPECT_NE(msg.find("4 x 4 = 16"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 node(s) x 4 GPU(s) = 8"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--gpus-per-node"), std::string::npos) << msg;
  // Exactly full fits.
  EXPECT_TRUE(MakeSlurmPlan(Task(2, 0, 4), Shape(4, 2), {}, FakeDns).ok());
}

TEST(SlurmPlan, CpuSlotsWhenNoGpus) {
  SlurmPlanOptions options;
  auto plan = MakeSlurmPlan(Task(2, 0, 0), Shape(8, 1), options, FakeDns);
  ASSERT_TRUE(plan.ok()) << plan.status();  // 2 nodes x 4 CPUs
  EXPECT_EQ(plan->slot_kind, SlotKind::kCpu);
  options.cpu_slots_per_node = 1;
  plan = MakeSlurmPlan(Task(2, 0, 0), Shape(2, 2), options, FakeDns);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("2 node(s) x 1 CPU slot(s) = 2"), std::string::npos)
      << plan.status();
  EXPECT_NE(plan.status().message().find("--cpu-slots-per-node"), std::string::npos);
}

TEST(SlurmPlan, OneTaskPerNode) {
  SlurmTask task = Task(2, 0, 4);
  task.tasks_per_node = {2, 2};
  auto plan = MakeSlurmPlan(task, Shape(1, 1), {}, FakeDns);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("--ntasks-per-node=1"), std::string::npos);
  EXPECT_NE(plan.status().message().find("gpu01 has 2 tasks"), std::string::npos);
}

TEST(SlurmPlan, ResumeAfterRequeue) {
  SlurmTask task = Task(2, 0, 4);
  EXPECT_FALSE(MakeSlurmPlan(task, Shape(1, 1), {}, FakeDns)->resume);
  task.restart_count = 1;
  EXPECT_TRUE(MakeSlurmPlan(task, Shape(1, 1), {}, FakeDns)->resume);
  SlurmPlanOptions options;
  options.resume = true;
  options.port_base = 41000;
  auto plan = MakeSlurmPlan(Task(2, 1, 4), Shape(1, 1), options, FakeDns);
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(plan->resume);
  EXPECT_EQ(plan->coordinator_target, "10.0.0.1:41000");
  EXPECT_EQ(plan->agent_port, 41003);
}

}  // namespace
}  // namespace kp::launcher
