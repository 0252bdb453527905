// Worker-side faults with the real daemons on loopback (one agent, two CPU
// slots, dp = 2 over Gloo), each compared with an uninterrupted run:
//  - SigtermStopsAtAStepBoundaryAndLosesNoStep: SIGTERM to every worker (as
//    Slurm's scancel does): they agree on a step, rank 0 checkpoints there,
//    all exit 0; the coordinator sees a stop before the last step, restarts,
//    and generation 2 resumes exactly where generation 1 stopped.
//  - HungCollectiveIsAbortedAndTheJobRecovers: rank 1 is SIGSTOPped; rank
//    0's collective times out (--comm_timeout_ms), it exits 75 with a log
//    line naming the collective, and the job recovers.
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

struct Reference {
  std::map<int64_t, double> losses;
};

Reference RunReference(Cluster& cluster) {
  Reference r;
  auto ref = cluster.client().Submit(JobSpec("ref"));
  EXPECT_TRUE(ref.ok()) << ref.status();
  if (!ref.ok()) return r;
  v1::JobStatus end = WaitFor(cluster, ref->job_id(), 120, Ended);
  EXPECT_EQ(end.state(), v1::JOB_STATE_COMPLETED) << end.message() << Logs(cluster, RunDir(cluster, *ref));
  r.losses = ReadLosses(RunDir(cluster, *ref) + "/metrics/g1.rank0.jsonl");
  return r;
}

void ExpectSameRun(const std::string& run_dir, const Reference& ref, int64_t generations) {
  Lineage lineage = ReadLineage(run_dir, generations);
  ASSERT_TRUE(lineage.error.empty()) << lineage.error;
  SampleCount samples = CountSamples(lineage, kSteps, kGlobalBatch);
  EXPECT_EQ(samples.lost, 0);
  EXPECT_EQ(samples.repeated, 0);
  ASSERT_EQ(lineage.losses.size(), static_cast<size_t>(kSteps));
  for (const auto& [step, loss] : lineage.losses) EXPECT_EQ(loss, ref.losses.at(step)) << "step " << step;
}

TEST(WorkerFaults, SigtermStopsAtAStepBoundaryAndLosesNoStep) {
  Cluster cluster(ClusterOptions{});
  ASSERT_TRUE(cluster.Start().ok());
  Reference ref = RunReference(cluster);
  auto job = cluster.client().Submit(JobSpec("term"));
  ASSERT_TRUE(job.ok());
  const std::string run_dir = RunDir(cluster, *job);
  ASSERT_TRUE(WaitForStep(run_dir, 1, 7, 90)) << Logs(cluster, run_dir);
  auto p0 = FindWorkerPid(run_dir, 1, 0), p1 = FindWorkerPid(run_dir, 1, 1);
  ASSERT_TRUE(p0 && p1);
  const auto t0 = Steady::now();
  ::kill(*p1, SIGTERM);  // one rank first, the other a little later
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  ::kill(*p0, SIGTERM);
  v1::JobStatus end = WaitFor(cluster, job->job_id(), 120, Ended);
  ASSERT_EQ(end.state(), v1::JOB_STATE_COMPLETED) << end.message() << Logs(cluster, run_dir);
  EXPECT_EQ(end.generation(), 2);
  const auto g1 = ReadLosses(run_dir + "/metrics/g1.rank0.jsonl");
  Lineage lineage = ReadLineage(run_dir, 2);
  ASSERT_TRUE(lineage.error.empty()) << lineage.error;
  const int64_t resumed_at = lineage.resumed_at[0];
  // No step lost: generation 2 starts right after generation 1's last step.
  EXPECT_EQ(resumed_at, g1.rbegin()->first + 1);
  const std::string g1_log = ReadFile(run_dir + "/logs/g1.rank0.out") + ReadFile(run_dir + "/logs/g1.rank0.err");
  EXPECT_NE(g1_log.find("checkpoint saved before step " + std::to_string(resumed_at)), std::string::npos) << g1_log;
  ExpectSameRun(run_dir, ref, 2);
  const double total_s = std::chrono::duration<double>(Steady::now() - t0).count();
  nlohmann::json result = {{"name", "worker_sigterm"}, {"recovered", true}, {"samples_lost", 0},
                           {"samples_repeated", 0},     {"steps_lost", 0},   {"stop_to_completion_s", total_s}};
  std::printf("RESULT %s\n", result.dump().c_str());
}

TEST(WorkerFaults, HungCollectiveIsAbortedAndTheJobRecovers) {
  ClusterOptions o;
  o.extra_worker_args = {"--threads", "1", "--comm_timeout_ms", "3000"};
  o.stop_grace_ms = 1000;
  Cluster cluster(o);
  ASSERT_TRUE(cluster.Start().ok());
  Reference ref = RunReference(cluster);
  auto job = cluster.client().Submit(JobSpec("hang"));
  ASSERT_TRUE(job.ok());
  const std::string run_dir = RunDir(cluster, *job);
  ASSERT_TRUE(WaitForStep(run_dir, 1, 2 * kCheckpointEvery + 1, 90)) << Logs(cluster, run_dir);
  auto p1 = FindWorkerPid(run_dir, 1, 1);
  ASSERT_TRUE(p1);
  const int64_t stalled_after = ReadLosses(run_dir + "/metrics/g1.rank0.jsonl").rbegin()->first;
  const auto t0 = Steady::now();
  ::kill(*p1, SIGSTOP);  // a peer that never answers
  v1::JobStatus s = WaitFor(cluster, job->job_id(), 60, [](const v1::JobStatus& s) {
    return s.generation() > 1 || s.state() == v1::JOB_STATE_QUEUED || Ended(s);
  });
  const double detect_s = std::chrono::duration<double>(Steady::now() - t0).count();
  EXPECT_NE(s.message().find("exited with code 75"), std::string::npos) << s.message() << Logs(cluster, run_dir);
  EXPECT_GE(detect_s, 2.5);  // the 3 s collective timeout, not something else
  EXPECT_LT(detect_s, 20.0);
  ASSERT_TRUE(WaitForStep(run_dir, 2, 0, 60)) << Logs(cluster, run_dir);
  const double resume_s = std::chrono::duration<double>(Steady::now() - t0).count();
  v1::JobStatus end = WaitFor(cluster, job->job_id(), 120, Ended);
  ::kill(*p1, SIGCONT);  // if the agent has not reaped it yet (it SIGKILLs stopped workers)
  ASSERT_EQ(end.state(), v1::JOB_STATE_COMPLETED) << end.message() << Logs(cluster, run_dir);
  const std::string log = ReadFile(run_dir + "/logs/g1.rank0.out") + ReadFile(run_dir + "/logs/g1.rank0.err");
  // The log line names the collective that hung and the timeout.
  EXPECT_NE(log.find("DEADLINE_EXCEEDED"), std::string::npos) << log;
  EXPECT_NE(log.find("3000 ms"), std::string::npos) << log;
  ExpectSameRun(run_dir, ref, end.generation());
  Lineage lineage = ReadLineage(run_dir, end.generation());
  nlohmann::json result = {{"name", "hung_collective"},
                           {"recovered", true},
                           {"samples_lost", 0},
                           {"samples_repeated", 0},
                           {"detect_s", detect_s},
                           {"resume_s", resume_s},
                           {"steps_lost", lineage.resumed_at.empty() ? -1 : stalled_after + 1 - lineage.resumed_at[0]}};
  std::printf("RESULT %s\n", result.dump().c_str());
}

}  // namespace
}  // namespace kp::ft
