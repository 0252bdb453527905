// Runs the Slurm parser and launch plan on the real environments that srun
// gave the tasks of a two-node job (dumped with `env` by each task into
// $KP_SLURM_ENV_DIR by srun_env_test.sh), so the parser is checked against
// what Slurm really sets, not against what we think it sets.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "launcher/slurm/plan.h"
#include "launcher/slurm/slurm_env.h"
#include "runtime/common/files.h"

namespace kp::launcher {
namespace {

std::vector<SlurmTask> LoadTasks(const std::string& prefix) {
  const char* dir = std::getenv("KP_SLURM_ENV_DIR");
  EXPECT_NE(dir, nullptr) << "KP_SLURM_ENV_DIR is unset: run through srun_env_test.sh";
  std::vector<SlurmTask> tasks;
  if (dir == nullptr) return tasks;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().filename().string().rfind(prefix + ".", 0) != 0) continue;
    auto text = ReadFile(entry.path().string());
    EXPECT_TRUE(text.ok()) << text.status();
    auto task = ParseSlurmTask(MapEnvironment(ParseEnvText(*text)));
    EXPECT_TRUE(task.ok()) << entry.path() << ": " << task.status();
    if (task.ok()) tasks.push_back(*task);
  }
  std::sort(tasks.begin(), tasks.end(),
            [](const SlurmTask& a, const SlurmTask& b) { return a.proc_id < b.proc_id; });
  return tasks;
}

int ExpectedNodes() {
  const char* n = std::getenv("KP_SLURM_NODES");
  return n == nullptr ? 2 : std::atoi(n);
}

TEST(RealSlurm, OneTaskPerNode) {
  const int nodes = ExpectedNodes();
  std::vector<SlurmTask> tasks = LoadTasks("one");
  ASSERT_EQ(static_cast<int>(tasks.size()), nodes);
  std::set<int> node_ids;
  for (int i = 0; i < nodes; ++i) {
    const SlurmTask& t = tasks[i];
    EXPECT_EQ(t.proc_id, i);
    EXPECT_EQ(t.ntasks, nodes);
    EXPECT_EQ(t.local_id, 0);
    ASSERT_EQ(static_cast<int>(t.nodes.size()), nodes);
    for (int n = 0; n < nodes; ++n) EXPECT_EQ(t.nodes[n], "n" + std::to_string(n + 1));
    EXPECT_EQ(t.tasks_per_node, std::vector<int>(nodes, 1));
    EXPECT_EQ(t.job_id, tasks[0].job_id);
    EXPECT_EQ(t.gpus_on_node, 0);
    node_ids.insert(t.node_id);

    // The plan every task computes: node 0 starts the coordinator, all dial
    // the same target. Emulated node names do not resolve: NodeAddr given.
    JobShape shape;
    shape.dp = nodes;
    SlurmPlanOptions options;
    options.coordinator_address = "127.0.0.1";
    options.node_address = "127.0.0.1";
    options.cpu_slots_per_node = 1;
    auto plan = MakeSlurmPlan(t, shape, options);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->start_coordinator, t.node_id == 0);
    EXPECT_EQ(plan->coordinator_target,
              "127.0.0.1:" + std::to_string(PortsForJob(t.job_id).coordinator));
    EXPECT_EQ(plan->total_slots, nodes);
    shape.dp = nodes + 1;
    EXPECT_EQ(MakeSlurmPlan(t, shape, options).status().code(),
              absl::StatusCode::kResourceExhausted);
  }
  EXPECT_EQ(static_cast<int>(node_ids.size()), nodes);
}

TEST(RealSlurm, TwoTasksPerNode) {
  const int nodes = ExpectedNodes();
  std::vector<SlurmTask> tasks = LoadTasks("two");
  ASSERT_EQ(static_cast<int>(tasks.size()), 2 * nodes);
  std::map<int, std::set<int>> local_ids_by_node;
  for (const SlurmTask& t : tasks) {
    EXPECT_EQ(t.ntasks, 2 * nodes);
    EXPECT_EQ(t.tasks_per_node, std::vector<int>(nodes, 2));
    local_ids_by_node[t.node_id].insert(t.local_id);
    // kprun wants one task per node and says so.
    auto plan = MakeSlurmPlan(t, JobShape{}, SlurmPlanOptions{});
    ASSERT_FALSE(plan.ok());
    EXPECT_NE(plan.status().message().find("--ntasks-per-node=1"), std::string::npos);
  }
  ASSERT_EQ(static_cast<int>(local_ids_by_node.size()), nodes);
  for (const auto& [node, ids] : local_ids_by_node) EXPECT_EQ(ids, (std::set<int>{0, 1}));
}

}  // namespace
}  // namespace kp::launcher
