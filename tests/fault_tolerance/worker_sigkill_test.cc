// SIGKILL one worker of a running 2-rank CPU job (dp = 2 over Gloo) after
// its first checkpoint, with the real kp-coordinator, kp-agent and kp-train
// on loopback. The job must recover by itself (generation 2 resumes from the
// newest complete checkpoint) and complete, and the recovered run must be
// the uninterrupted run: the same steps, each step's global batch consumed
// exactly once (the sampler's global indices of step s are
// [s * G, (s + 1) * G)), and bitwise the same per-step losses.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/fault_tolerance/ft_cluster.h"
#include "tests/fault_tolerance/ft_job.h"

namespace kp::ft {
namespace {

using Steady = std::chrono::steady_clock;

TEST(FaultTolerance, WorkerSigkillRecoversWithNoSampleLostOrRepeated) {
  Cluster cluster(ClusterOptions{});
  ASSERT_TRUE(cluster.Start().ok());

  // The uninterrupted run.
  auto ref = cluster.client().Submit(JobSpec("ref"));
  ASSERT_TRUE(ref.ok()) << ref.status();
  v1::JobStatus ref_end = WaitFor(cluster, ref->job_id(), 120, Ended);
  const std::string ref_dir = RunDir(cluster, *ref);
  ASSERT_EQ(ref_end.state(), v1::JOB_STATE_COMPLETED) << ref_end.message() << Logs(cluster, ref_dir);
  const auto ref_losses = ReadLosses(ref_dir + "/metrics/g1.rank0.jsonl");
  ASSERT_EQ(ref_losses.size(), static_cast<size_t>(kSteps));

  // The same job, with rank 1 SIGKILLed once a checkpoint exists.
  auto job = cluster.client().Submit(JobSpec("ft"));
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string run_dir = RunDir(cluster, *job);
  const std::string g1_metrics = run_dir + "/metrics/g1.rank0.jsonl";
  const int kill_after_step = 2 * kCheckpointEvery + 1;
  const auto wait_deadline = Steady::now() + std::chrono::seconds(90);
  std::optional<int> pid;
  while (Steady::now() < wait_deadline) {
    auto losses = ReadLosses(g1_metrics);
    if (!losses.empty() && losses.rbegin()->first >= kill_after_step) {
      pid = FindWorkerPid(run_dir, 1, 1);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(pid.has_value()) << "generation 1 never reached step " << kill_after_step << Logs(cluster, run_dir);
  const int64_t killed_after = ReadLosses(g1_metrics).rbegin()->first;
  ASSERT_LT(killed_after, kSteps - 1) << "the run ended before the kill: make it longer";
  const auto t_kill = Steady::now();
  ASSERT_EQ(::kill(*pid, SIGKILL), 0);

  // Detection: the coordinator ends generation 1 (the job leaves it).
  const RecoveryTimes times = TimeRecovery(cluster, job->job_id(), run_dir, t_kill, std::chrono::seconds(60));
  const double detect_s = times.detect_s, resume_s = times.resume_s;
  const std::string g2_metrics = run_dir + "/metrics/g2.rank0.jsonl";
  v1::JobStatus end = WaitFor(cluster, job->job_id(), 120, Ended);
  ASSERT_EQ(end.state(), v1::JOB_STATE_COMPLETED) << end.message() << Logs(cluster, run_dir);
  EXPECT_EQ(end.generation(), 2);
  EXPECT_EQ(end.restarts(), 1);
  EXPECT_EQ(end.progress().step(), kSteps - 1);

  // Where generation 2 resumed: its own log line, and its first step.
  const std::string g2_log = ReadFile(run_dir + "/logs/g2.rank0.out") + ReadFile(run_dir + "/logs/g2.rank0.err");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(g2_log, m, std::regex("resumed from \\S+ at step (\\d+)"))) << g2_log;
  const int64_t resumed_at = std::stoll(m[1]);
  const auto g1 = ReadLosses(g1_metrics);
  const auto g2 = ReadLosses(g2_metrics);
  ASSERT_FALSE(g2.empty());
  EXPECT_EQ(g2.begin()->first, resumed_at);
  EXPECT_GT(resumed_at, 0) << "generation 2 started from scratch, not from a checkpoint";
  EXPECT_EQ(resumed_at % kCheckpointEvery, 0);
  EXPECT_LE(resumed_at, killed_after + 1);
  // The checkpoint's data position is the sampler's: step * global batch.
  auto state = nlohmann::json::parse(
      ReadFile(run_dir + "/checkpoints/step_" + [&] {
        char b[16];
        std::snprintf(b, sizeof(b), "%08lld", static_cast<long long>(resumed_at));
        return std::string(b);
      }() + "/state.json"),
      nullptr, false);
  if (!state.is_discarded()) {
    EXPECT_EQ(state["data_position"].get<int64_t>(), resumed_at * kGlobalBatch);
  }  // (keep_checkpoints may have rotated it out by the end)

  // The lineage of the final model: generation 1 up to the checkpoint, then
  // generation 2. Every step, hence every global sample index in
  // [0, kSteps * G), exactly once.
  std::vector<int> uses(kSteps * kGlobalBatch, 0);
  std::map<int64_t, double> lineage;
  for (const auto& [s, loss] : g1) {
    if (s < resumed_at) lineage[s] = loss;
  }
  for (const auto& [s, loss] : g2) lineage[s] = loss;
  for (const auto& [s, loss] : lineage) {
    for (int64_t g = s * kGlobalBatch; g < (s + 1) * kGlobalBatch; ++g) ++uses[g];
  }
  int lost = 0, repeated = 0;
  for (int u : uses) {
    lost += u == 0;
    repeated += u > 1;
  }
  EXPECT_EQ(lost, 0);
  EXPECT_EQ(repeated, 0);
  ASSERT_EQ(lineage.size(), static_cast<size_t>(kSteps));
  // Bitwise: the same samples, the same state, the same reduction order.
  for (const auto& [s, loss] : lineage) {
    EXPECT_EQ(loss, ref_losses.at(s)) << "step " << s << (s < resumed_at ? " (generation 1)" : " (generation 2)");
  }
  const int64_t steps_lost = killed_after + 1 - resumed_at;

  nlohmann::json result = {{"name", "worker_sigkill"},  {"recovered", true},      {"samples_lost", lost},
                           {"samples_repeated", repeated}, {"detect_s", detect_s}, {"resume_s", resume_s},
                           {"steps_lost", steps_lost},   {"killed_after_step", killed_after},
                           {"resumed_at_step", resumed_at}};
  std::printf("RESULT %s\n", result.dump().c_str());
  if (const char* out = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR")) {
    std::ofstream(std::string(out) + "/worker_sigkill.json") << result.dump(2) << "\n";
  }
}

}  // namespace
}  // namespace kp::ft
