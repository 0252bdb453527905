// A straggler in a synchronous data-parallel job, with the real
// kp-coordinator, kp-agent and kp-train on loopback: rank 1 of a 2-rank CPU
// job (dp = 2 over Gloo, one rank per agent) is slowed by the test-only
// KP_TEST_SLOW_RANK hook (it sleeps 300 ms per step). Every rank advances at
// rank 1's pace, so only the ranks' own compute times (their step-time
// files, tailed by their agents, reported in heartbeats) can name it: the
// coordinator must flag rank 1 (a persisted STRAGGLER event naming its
// device) and never rank 0.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <vector>

#include "runtime/worker/step_time/step_time_file.h"
#include "tests/fault_tolerance/ft_cluster.h"
#include "tests/fault_tolerance/ft_job.h"

namespace kp::ft {
namespace {

constexpr int kSlowMs = 300;
constexpr int kStrSteps = 30;

std::vector<worker::step_time::StepTime> ReadStepTimes(const std::string& path) {
  std::vector<worker::step_time::StepTime> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (auto t = worker::step_time::ParseStepTime(line)) out.push_back(*t);
  }
  return out;
}

double MedianOf(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

TEST(FaultTolerance, SlowRankIsFlaggedAsStragglerUnderSyncDataParallel) {
  // The agents inherit the environment, and their workers with it.
  ASSERT_EQ(::setenv(worker::step_time::kSlowRankEnv, ("1:" + std::to_string(kSlowMs)).c_str(), 1), 0);
  ClusterOptions o;
  o.agents = 2;
  o.slots_per_agent = 1;
  Cluster cluster(o);
  ASSERT_TRUE(cluster.Start().ok());
  auto job = cluster.client().Submit(JobSpec("straggler", 0, kStrSteps));
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string run_dir = RunDir(cluster, *job);
  v1::JobStatus end = WaitFor(cluster, job->job_id(), 50, Ended);
  ::unsetenv(worker::step_time::kSlowRankEnv);
  ASSERT_EQ(end.state(), v1::JOB_STATE_COMPLETED) << end.message() << Logs(cluster, run_dir);

  // What each rank measured: rank 1 computes >= 300 ms per step and hardly
  // waits; rank 0 computes fast and waits for rank 1 in the all-reduce.
  std::vector<double> compute[2], wait[2];
  for (int r = 0; r < 2; ++r) {
    const std::string path = run_dir + "/metrics/g1.rank" + std::to_string(r) + ".steps.jsonl";
    auto times = ReadStepTimes(path);
    ASSERT_EQ(times.size(), static_cast<size_t>(kStrSteps)) << path << Logs(cluster, run_dir);
    for (const auto& t : times) {
      EXPECT_EQ(t.rank, r);
      compute[r].push_back(t.compute_s);
      wait[r].push_back(t.comm_wait_s);
    }
  }
  const double c0 = MedianOf(compute[0]), c1 = MedianOf(compute[1]);
  const double w0 = MedianOf(wait[0]), w1 = MedianOf(wait[1]);
  std::printf("[straggler] median compute_s rank0=%.3f rank1=%.3f, comm_wait_s rank0=%.3f rank1=%.3f\n", c0, c1,
              w0, w1);
  EXPECT_GE(c1, kSlowMs / 1000.0);
  EXPECT_LT(c0, c1 / 3) << "the fast rank's own time must not include its wait for the slow one";
  EXPECT_GT(w0, w1);

  // The coordinator's verdicts, as persisted job events.
  std::vector<v1::JobEvent> verdicts;
  std::string placement;
  auto watched = cluster.client().Watch(job->job_id(), [&](const v1::JobEvent& e) {
    if (e.type() == v1::EVENT_TYPE_STRAGGLER) verdicts.push_back(e);
    if (e.type() == v1::EVENT_TYPE_STATE && e.state() == v1::JOB_STATE_PLACED) placement = e.message();
  });
  ASSERT_TRUE(watched.ok()) << watched.status();
  ASSERT_FALSE(verdicts.empty()) << "rank 1 was never flagged" << Logs(cluster, run_dir);
  EXPECT_EQ(verdicts.front().rank(), 1);
  EXPECT_TRUE(verdicts.front().straggler());
  EXPECT_EQ(verdicts.front().generation(), 1);
  EXPECT_FALSE(verdicts.front().device().empty());
  // "ranks: 0@node-0:0 1@node-1:0": the event names rank 1's device.
  std::string device = verdicts.front().device();
  std::replace(device.begin(), device.end(), '#', ':');
  EXPECT_NE(placement.find("1@" + device), std::string::npos) << placement << " vs " << verdicts.front().device();
  EXPECT_GE(verdicts.front().step_time_s(), kSlowMs / 1000.0);
  for (const auto& v : verdicts) {
    EXPECT_FALSE(v.rank() == 0 && v.straggler()) << "the fast rank was flagged: " << v.message();
  }
}

}  // namespace
}  // namespace kp::ft
