// A straggler's device is avoided by the job's next generation, with the
// real kp-coordinator (--exclude_stragglers), kp-agent and kp-train on
// loopback: 3 agents x 1 CPU slot, a dp = 2 job whose rank 1 is slowed by
// the test-only KP_TEST_SLOW_RANK hook. Once rank 1 is flagged, rank 0's
// worker is SIGKILLed; generation 2 must be placed on the two other devices
// (the FAULT event names the excluded device) and the job completes.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/fault_tolerance/ft_cluster.h"
#include "tests/fault_tolerance/ft_job.h"

namespace kp::ft {
namespace {

TEST(FaultTolerance, StragglerDeviceIsExcludedFromTheNextGeneration) {
  ClusterOptions o;
  o.agents = 3;
  o.slots_per_agent = 1;
  o.agent_env = {"KP_TEST_SLOW_RANK=1:300"};  // test only
  o.extra_coordinator_args = {"--exclude_stragglers", "--straggler_window", "4"};
  Cluster cluster(o);
  ASSERT_TRUE(cluster.Start().ok());
  auto job = cluster.client().Submit(JobSpec("exclude", 0, 40));
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string run_dir = RunDir(cluster, *job);
  // 4 reported steps flag rank 1; 12 steps leave room for the heartbeats.
  ASSERT_TRUE(WaitForStep(run_dir, 1, 12, 40)) << Logs(cluster, run_dir);
  auto pid = FindWorkerPid(run_dir, 1, 0);
  ASSERT_TRUE(pid.has_value()) << Logs(cluster, run_dir);
  ASSERT_EQ(::kill(*pid, SIGKILL), 0);
  v1::JobStatus end = WaitFor(cluster, job->job_id(), 50, Ended);
  ASSERT_EQ(end.state(), v1::JOB_STATE_COMPLETED) << end.message() << Logs(cluster, run_dir);
  EXPECT_GE(end.generation(), 2);

  std::vector<v1::JobEvent> events;
  auto watched = cluster.client().Watch(job->job_id(), [&](const v1::JobEvent& e) { events.push_back(e); });
  ASSERT_TRUE(watched.ok()) << watched.status();
  std::string slow_device, g2_placement;
  bool excluded = false;
  for (const auto& e : events) {
    if (e.type() == v1::EVENT_TYPE_STRAGGLER && e.generation() == 1 && e.straggler() && slow_device.empty()) {
      EXPECT_EQ(e.rank(), 1) << e.message();
      slow_device = e.device();
    }
    if (e.type() == v1::EVENT_TYPE_FAULT && !e.device().empty()) {
      EXPECT_EQ(e.device(), slow_device) << e.message();
      EXPECT_NE(e.message().find("straggler in generation 1"), std::string::npos) << e.message();
      excluded = true;
    }
    if (e.type() == v1::EVENT_TYPE_STATE && e.state() == v1::JOB_STATE_PLACED && e.generation() == 2) {
      g2_placement = e.message();
    }
  }
  ASSERT_FALSE(slow_device.empty()) << "rank 1 was not flagged before the fault" << Logs(cluster, run_dir);
  EXPECT_TRUE(excluded) << "no FAULT event names the excluded device";
  ASSERT_FALSE(g2_placement.empty());
  std::string as_placed = slow_device;  // "node-1#0" is "node-1:0" in "ranks: 0@node-0:0 1@node-2:0"
  std::replace(as_placed.begin(), as_placed.end(), '#', ':');
  EXPECT_EQ(g2_placement.find("@" + as_placed), std::string::npos) << g2_placement << " uses " << slow_device;
  std::printf("[straggler] excluded %s; generation 2 %s\n", slow_device.c_str(), g2_placement.c_str());
}

}  // namespace
}  // namespace kp::ft
