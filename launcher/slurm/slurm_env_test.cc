#include "launcher/slurm/slurm_env.h"

#include <gtest/gtest.h>

namespace kp::launcher {
namespace {

std::map<std::string, std::string> TwoNodeTask() {
  return {{"SLURM_JOB_ID", "4711"},          {"SLURM_JOB_NODELIST", "gpu[01-02]"},
          {"SLURM_TASKS_PER_NODE", "1(x2)"}, {"SLURM_NODEID", "1"},
          {"SLURM_PROCID", "1"},             {"SLURM_LOCALID", "0"},
          {"SLURM_NTASKS", "2"},             {"SLURM_GPUS_ON_NODE", "4"},
          {"CUDA_VISIBLE_DEVICES", "0,1,2,3"}, {"SLURM_CPUS_ON_NODE", "32"}};
}

TEST(SlurmEnv, ParsesATask) {
  auto task = ParseSlurmTask(MapEnvironment(TwoNodeTask()));
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->job_id, 4711);
  EXPECT_EQ(task->nodes, (std::vector<std::string>{"gpu01", "gpu02"}));
  EXPECT_EQ(task->node_name(), "gpu02");
  EXPECT_EQ(task->node_id, 1);
  EXPECT_EQ(task->proc_id, 1);
  EXPECT_EQ(task->ntasks, 2);
  EXPECT_EQ(task->gpus_on_node, 4);
  EXPECT_EQ(task->visible_devices.size(), 4u);
  EXPECT_EQ(task->cpus_on_node, 32);
  EXPECT_EQ(task->restart_count, 0);
}

TEST(SlurmEnv, StepVariablesWinOverJobVariables) {
  auto env = TwoNodeTask();
  env["SLURM_JOB_NODELIST"] = "gpu[01-04]";
  env["SLURM_TASKS_PER_NODE"] = "2(x4)";
  env["SLURM_STEP_NODELIST"] = "gpu[01-02]";
  env["SLURM_STEP_TASKS_PER_NODE"] = "1(x2)";
  auto task = ParseSlurmTask(MapEnvironment(env));
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->nodes.size(), 2u);
}

TEST(SlurmEnv, GpusFromCudaVisibleDevicesWhenSlurmDoesNotSay) {
  auto env = TwoNodeTask();
  env.erase("SLURM_GPUS_ON_NODE");
  env["CUDA_VISIBLE_DEVICES"] = "2,3";
  auto task = ParseSlurmTask(MapEnvironment(env));
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->gpus_on_node, 2);
  env.erase("CUDA_VISIBLE_DEVICES");
  task = ParseSlurmTask(MapEnvironment(env));
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->gpus_on_node, 0);
}

TEST(SlurmEnv, RequeueIsVisible) {
  auto env = TwoNodeTask();
  env["SLURM_RESTART_COUNT"] = "2";
  auto task = ParseSlurmTask(MapEnvironment(env));
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->restart_count, 2);
}

TEST(SlurmEnv, OutsideAnAllocationSaysWhatToDo) {
  auto task = ParseSlurmTask(MapEnvironment({}));
  ASSERT_FALSE(task.ok());
  EXPECT_EQ(task.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(task.status().message().find("SLURM_JOB_ID"), std::string::npos);
  EXPECT_NE(task.status().message().find("kprun local"), std::string::npos);
}

TEST(SlurmEnv, InconsistentValuesNameTheVariable) {
  struct Case {
    std::string var, value, named;
  };
  for (const Case& c : std::vector<Case>{
           {"SLURM_NODEID", "2", "SLURM_NODEID=2"},
           {"SLURM_NODEID", "one", "SLURM_NODEID='one'"},
           {"SLURM_TASKS_PER_NODE", "1(x3)", "SLURM_TASKS_PER_NODE='1(x3)'"},
           {"SLURM_TASKS_PER_NODE", "1(x", "SLURM_TASKS_PER_NODE"},
           {"SLURM_JOB_NODELIST", "gpu[01-02", "SLURM_JOB_NODELIST: hostlist: unclosed"},
           {"SLURM_NTASKS", "3", "SLURM_NTASKS=3"},
           {"SLURM_PROCID", "2", "SLURM_PROCID=2"},
           {"SLURM_LOCALID", "1", "SLURM_LOCALID=1"},
           {"SLURM_GPUS_ON_NODE", "-1", "SLURM_GPUS_ON_NODE=-1"},
           {"SLURM_JOB_ID", "0", "SLURM_JOB_ID=0"}}) {
    auto env = TwoNodeTask();
    env[c.var] = c.value;
    auto task = ParseSlurmTask(MapEnvironment(env));
    ASSERT_FALSE(task.ok()) << c.var << "=" << c.value;
    EXPECT_NE(task.status().message().find(c.named), std::string::npos)
        << c.var << "=" << c.value << " gave: " << task.status();
  }
}

TEST(SlurmEnv, ParsesEnvText) {
  auto vars = ParseEnvText("A=1\nB=x=y\nnoequals\n=bad\nC=\n");
  EXPECT_EQ(vars.size(), 3u);
  EXPECT_EQ(vars["B"], "x=y");
  EXPECT_EQ(vars["C"], "");
}

}  // namespace
}  // namespace kp::launcher
