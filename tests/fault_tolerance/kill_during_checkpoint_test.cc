// SIGKILL the writer in the middle of a checkpoint write (real daemons,
// dp = 2 over Gloo on CPU). The checkpoint writer's test hook
// (KP_TEST_CHECKPOINT_WRITE_DELAY_MS / _STEP, runtime/engine/checkpoint)
// holds the save of step 15 in its staging directory for a few seconds;
// rank 0, which writes checkpoints, is killed while that directory exists.
// The previous checkpoint (step 10) must stay the newest and loadable
// (LATEST unchanged, no step_00000015), generation 2 must resume from it,
// never from the partial one, the leftover staging directory must be gone
// by the end, and the run must equal the uninterrupted one: every sample
// exactly once, every step's loss bitwise the reference's.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/fault_tolerance/ft_cluster.h"
#include "tests/fault_tolerance/ft_job.h"

namespace kp::ft {
namespace {

namespace fs = std::filesystem;
using Steady = std::chrono::steady_clock;

constexpr int kSlowStep = 3 * kCheckpointEvery;  // the save that is killed
constexpr int kDelayMs = 3000;

std::vector<std::string> StagingDirs(const std::string& checkpoints) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(checkpoints, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(".staging.", 0) == 0) out.push_back(n);
  }
  return out;
}

TEST(KillDuringCheckpoint, PartialCheckpointIsNeverUsed) {
  ClusterOptions o;
  o.agent_env = {"KP_TEST_CHECKPOINT_WRITE_DELAY_MS=" + std::to_string(kDelayMs),
                 "KP_TEST_CHECKPOINT_WRITE_DELAY_STEP=" + std::to_string(kSlowStep)};
  Cluster cluster(o);
  ASSERT_TRUE(cluster.Start().ok());

  // The uninterrupted run (its step-15 save is slow too; nothing kills it).
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
  const std::string ckdir = run_dir + "/checkpoints";
  const std::string staging = ckdir + "/.staging.step_000000" + std::to_string(kSlowStep);
  const std::string g1_metrics = run_dir + "/metrics/g1.rank0.jsonl";

  // Wait for the slow save's staging directory (and its first part), then
  // kill the writer.
  const auto deadline = Steady::now() + std::chrono::seconds(90);
  bool writing = false;
  while (Steady::now() < deadline && !writing) {
    writing = fs::exists(staging + "/model.safetensors");
    if (!writing) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_TRUE(writing) << "no staging directory " << staging << Logs(cluster, run_dir);
  auto pid = FindWorkerPid(run_dir, 1, 0);
  ASSERT_TRUE(pid.has_value()) << Logs(cluster, run_dir);
  const int64_t killed_after = ReadLosses(g1_metrics).rbegin()->first;
  const auto t_kill = Steady::now();
  ASSERT_EQ(::kill(*pid, SIGKILL), 0);
  ASSERT_TRUE(fs::exists(staging)) << "the save finished before the kill: raise kDelayMs";

  // Right after the kill: the partial checkpoint is invisible, the previous
  // one is the newest and complete.
  const std::string previous = "step_000000" + std::to_string(kSlowStep - kCheckpointEvery);
  EXPECT_EQ(ReadFile(ckdir + "/LATEST"), previous + "\n");
  EXPECT_FALSE(fs::exists(ckdir + "/step_000000" + std::to_string(kSlowStep)));
  auto state = nlohmann::json::parse(ReadFile(ckdir + "/" + previous + "/state.json"), nullptr, false);
  ASSERT_FALSE(state.is_discarded());
  EXPECT_EQ(state["step"], kSlowStep - kCheckpointEvery);
  EXPECT_FALSE(ReadF32Tensors(ckdir + "/" + previous + "/model.safetensors").empty());

  const RecoveryTimes times = TimeRecovery(cluster, job->job_id(), run_dir, t_kill, std::chrono::seconds(60));
  const double detect_s = times.detect_s, resume_s = times.resume_s;
  v1::JobStatus end = WaitFor(cluster, job->job_id(), 120, Ended);
  ASSERT_EQ(end.state(), v1::JOB_STATE_COMPLETED) << end.message() << Logs(cluster, run_dir);
  EXPECT_EQ(end.generation(), 2);
  EXPECT_EQ(end.restarts(), 1);

  Lineage lineage = ReadLineage(run_dir, 2);
  ASSERT_TRUE(lineage.error.empty()) << lineage.error;
  const int64_t resumed_at = lineage.resumed_at[0];
  // From the checkpoint before the partial one, never from the partial one.
  EXPECT_EQ(resumed_at, kSlowStep - kCheckpointEvery);
  const std::string g2_log = ReadFile(run_dir + "/logs/g2.rank0.out") + ReadFile(run_dir + "/logs/g2.rank0.err");
  EXPECT_NE(g2_log.find("resumed from " + ckdir + "/" + previous), std::string::npos) << g2_log;
  SampleCount samples = CountSamples(lineage, kSteps, kGlobalBatch);
  EXPECT_EQ(samples.lost, 0);
  EXPECT_EQ(samples.repeated, 0);
  ASSERT_EQ(lineage.losses.size(), static_cast<size_t>(kSteps));
  for (const auto& [step, loss] : lineage.losses) EXPECT_EQ(loss, reference.at(step)) << "step " << step;
  // The leftover staging directory was replaced by generation 2's own save
  // of that step or removed by a later commit; none is left.
  EXPECT_TRUE(StagingDirs(ckdir).empty()) << StagingDirs(ckdir).front();
  EXPECT_EQ(ReadFile(ckdir + "/LATEST"), "step_000000" + std::to_string(kSteps) + "\n");

  const int64_t steps_lost = killed_after + 1 - resumed_at;
  nlohmann::json result = {{"name", "kill_during_checkpoint"}, {"recovered", true},
                           {"samples_lost", samples.lost},      {"samples_repeated", samples.repeated},
                           {"detect_s", detect_s},              {"resume_s", resume_s},
                           {"steps_lost", steps_lost},          {"killed_after_step", killed_after},
                           {"resumed_at_step", resumed_at},     {"killed_save_of_step", kSlowStep}};
  std::printf("RESULT %s\n", result.dump().c_str());
}

}  // namespace
}  // namespace kp::ft
