// The coordinator and a node lost together: SIGKILL kp-coordinator and,
// right after, node-1's agent and its worker (2 agents with one CPU slot
// each, dp = 2 over Gloo). Rank 0's collective then fails with nobody to
// report to. Both daemons are restarted (the coordinator on the same SQLite
// state, the agent with the same id): the coordinator must find the job,
// learn from the agents what became of generation 1, place generation 2 from
// the newest checkpoint, and the job must complete as the uninterrupted run:
// every sample exactly once, every step's loss bitwise the reference's.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/fault_tolerance/ft_cluster.h"
#include "tests/fault_tolerance/ft_job.h"

namespace kp::ft {
namespace {

using Steady = std::chrono::steady_clock;

TEST(CoordinatorAndAgentSigkill, BothRestartAndTheJobResumes) {
  ClusterOptions o;
  o.agents = 2;
  o.slots_per_agent = 1;
  o.heartbeat_interval_ms = 200;
  o.heartbeat_timeout_ms = 1500;
  Cluster cluster(o);
  ASSERT_TRUE(cluster.Start().ok());

  auto ref = cluster.client().Submit(JobSpec("ref"));
  ASSERT_TRUE(ref.ok()) << ref.status();
  v1::JobStatus ref_end = WaitFor(cluster, ref->job_id(), 120, Ended);
  const std::string ref_dir = RunDir(cluster, *ref);
  ASSERT_EQ(ref_end.state(), v1::JOB_STATE_COMPLETED) << ref_end.message() << Logs(cluster, ref_dir);
  const auto reference = ReadLosses(ref_dir + "/metrics/g1.rank0.jsonl");
  ASSERT_EQ(reference.size(), static_cast<size_t>(kSteps));

  auto job = cluster.client().Submit(JobSpec("ft"));
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string run_dir = RunDir(cluster, *job);
  const std::string g1_metrics = run_dir + "/metrics/g1.rank0.jsonl";
  ASSERT_TRUE(WaitForStep(run_dir, 1, 2 * kCheckpointEvery + 1, 90)) << Logs(cluster, run_dir);
  auto pid = FindWorkerPid(run_dir, 1, 1);
  ASSERT_TRUE(pid.has_value()) << Logs(cluster, run_dir);
  const std::string agent_log_0 = ReadFile(cluster.agent(0).log());
  ASSERT_EQ(agent_log_0.find("rank 1/2"), std::string::npos) << "expected rank 1 on node-1";

  const auto t_kill = Steady::now();
  ASSERT_TRUE(cluster.coordinator().Stop(SIGKILL, 5000).has_value());
  cluster.agent(1).Signal(SIGKILL);
  ::kill(*pid, SIGKILL);
  const int64_t killed_after = ReadLosses(g1_metrics).rbegin()->first;
  ASSERT_LT(killed_after, kSteps - 1) << "the run ended before the kill";
  // Both down for a while: rank 0 notices its dead peer with no coordinator
  // to tell; agent 0 keeps retrying its heartbeats.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ASSERT_TRUE(cluster.RestartCoordinator().ok());
  ASSERT_TRUE(cluster.RestartAgent(1).ok());

  const RecoveryTimes times = TimeRecovery(cluster, job->job_id(), run_dir, t_kill, std::chrono::seconds(60));
  const double detect_s = times.detect_s, resume_s = times.resume_s;
  v1::JobStatus end = WaitFor(cluster, job->job_id(), 120, Ended);
  ASSERT_EQ(end.state(), v1::JOB_STATE_COMPLETED) << end.message() << Logs(cluster, run_dir);
  EXPECT_EQ(end.generation(), 2);
  EXPECT_EQ(end.restarts(), 1);

  Lineage lineage = ReadLineage(run_dir, end.generation());
  ASSERT_TRUE(lineage.error.empty()) << lineage.error;
  const int64_t resumed_at = lineage.resumed_at.back();
  EXPECT_GT(resumed_at, 0) << "generation 2 started from scratch";
  const int64_t g1_last = ReadLosses(g1_metrics).rbegin()->first;
  EXPECT_LE(resumed_at, g1_last + 1);
  SampleCount samples = CountSamples(lineage, kSteps, kGlobalBatch);
  EXPECT_EQ(samples.lost, 0);
  EXPECT_EQ(samples.repeated, 0);
  ASSERT_EQ(lineage.losses.size(), static_cast<size_t>(kSteps));
  for (const auto& [step, loss] : lineage.losses) EXPECT_EQ(loss, reference.at(step)) << "step " << step;

  nlohmann::json result = {{"name", "coordinator_and_agent_sigkill"},
                           {"recovered", true},
                           {"samples_lost", samples.lost},
                           {"samples_repeated", samples.repeated},
                           {"detect_s", detect_s},
                           {"resume_s", resume_s},
                           {"steps_lost", g1_last + 1 - resumed_at},
                           {"down_s", 1.5},
                           {"killed_after_step", killed_after},
                           {"resumed_at_step", resumed_at}};
  std::printf("RESULT %s\n", result.dump().c_str());
}

}  // namespace
}  // namespace kp::ft
