// kp-coordinator SIGKILLed mid-run and restarted on the same SQLite state
// (real daemons, dp = 2 over Gloo on CPU). The workers keep training
// through the outage (their agent retries its heartbeats), the restarted
// coordinator finds the job RUNNING in generation 1, and the job completes
// with no restart at all: the uninterrupted run's losses, bitwise.
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
constexpr int kLongSteps = 400;

TEST(CoordinatorSigkill, JobContinuesThroughTheOutage) {
  ClusterOptions o;
  o.heartbeat_timeout_ms = 5000;
  Cluster cluster(o);
  ASSERT_TRUE(cluster.Start().ok());
  auto ref = cluster.client().Submit(JobSpec("ref", 0, kLongSteps));
  ASSERT_TRUE(ref.ok()) << ref.status();
  v1::JobStatus ref_end = WaitFor(cluster, ref->job_id(), 120, Ended);
  ASSERT_EQ(ref_end.state(), v1::JOB_STATE_COMPLETED) << ref_end.message();
  const auto reference = ReadLosses(RunDir(cluster, *ref) + "/metrics/g1.rank0.jsonl");

  auto job = cluster.client().Submit(JobSpec("outage", 0, kLongSteps));
  ASSERT_TRUE(job.ok());
  const std::string run_dir = RunDir(cluster, *job);
  ASSERT_TRUE(WaitForStep(run_dir, 1, 10, 90)) << Logs(cluster, run_dir);
  const auto t0 = Steady::now();
  ASSERT_TRUE(cluster.coordinator().Stop(SIGKILL, 5000).has_value());
  const int64_t at_kill = ReadLosses(run_dir + "/metrics/g1.rank0.jsonl").rbegin()->first;
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  // Training went on without the coordinator.
  EXPECT_GT(ReadLosses(run_dir + "/metrics/g1.rank0.jsonl").rbegin()->first, at_kill);
  ASSERT_TRUE(cluster.RestartCoordinator().ok());
  const double back_s = std::chrono::duration<double>(Steady::now() - t0).count();
  v1::JobStatus end = WaitFor(cluster, job->job_id(), 120, Ended);
  ASSERT_EQ(end.state(), v1::JOB_STATE_COMPLETED) << end.message() << Logs(cluster, run_dir);
  EXPECT_EQ(end.generation(), 1);
  EXPECT_EQ(end.restarts(), 0);
  const auto losses = ReadLosses(run_dir + "/metrics/g1.rank0.jsonl");
  ASSERT_EQ(losses.size(), static_cast<size_t>(kLongSteps));
  for (const auto& [step, loss] : losses) EXPECT_EQ(loss, reference.at(step)) << "step " << step;
  nlohmann::json result = {{"name", "coordinator_sigkill"}, {"recovered", true}, {"samples_lost", 0},
                           {"samples_repeated", 0},          {"detect_s", 0.0},  {"resume_s", 0.0},
                           {"steps_lost", 0},                {"coordinator_back_s", back_s}};
  std::printf("RESULT %s\n", result.dump().c_str());
}

}  // namespace
}  // namespace kp::ft
