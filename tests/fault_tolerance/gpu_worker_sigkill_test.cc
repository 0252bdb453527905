// On one GPU: SIGKILL the CUDA worker of a running job (one kp-agent
// offering the GPUs nvidia-smi lists, a dp = 1 job on device cuda, real
// kp-coordinator and kp-train). The agent reports the exit, the coordinator
// restarts the job as generation 2 on the freed GPU from the newest
// checkpoint, and the job completes with the uninterrupted run's losses:
// every sample exactly once, every step's loss within 1e-4 (relative) of
// the reference's (CUDA kernels such as the embedding backward accumulate
// with atomics, so two GPU runs need not agree bitwise).
//
// Skips without a GPU. Binaries: $KP_BIN_DIR, else the Bazel runfiles,
// else beside this test binary (a bundle's bin/, tools/build_bundle.sh).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "kernels/gpu_test_util.h"
#include "tests/fault_tolerance/ft_cluster.h"
#include "tests/fault_tolerance/ft_job.h"

namespace kp::ft {
namespace {

using Steady = std::chrono::steady_clock;
constexpr int kGpuBatch = kMicroBatch;  // dp = 1, grad_accum 1
constexpr double kRelTol = 1e-4;

v1::JobSpec GpuSpec(const std::string& name) {
  v1::JobSpec s = JobSpec(name);
  s.set_dp(1);  // the agent passes KP_DP=1 over the config's parallel.dp
  return s;
}

TEST(GpuWorkerSigkill, AgentRestartsTheGpuWorkerAndTheRunCompletes) {
  KP_SKIP_WITHOUT_GPU();
  for (const char* bin : {"runtime/coordinator/kp-coordinator", "runtime/agent/kp-agent", "runtime/worker/kp-train"}) {
    ASSERT_TRUE(std::filesystem::exists(BinaryPath(bin)))
        << BinaryPath(bin) << " not found: set KP_BIN_DIR to the directory holding kp-coordinator, "
        << "kp-agent and kp-train";
  }
  ClusterOptions o;
  o.agents = 1;
  o.slots_per_agent = 0;  // the GPUs nvidia-smi lists
  Cluster cluster(o);
  absl::Status started = cluster.Start();
  ASSERT_TRUE(started.ok()) << started << "\n" << ReadFile(cluster.dir() + "/agent-0.log");

  auto ref = cluster.client().Submit(GpuSpec("gpu-ref"));
  ASSERT_TRUE(ref.ok()) << ref.status();
  v1::JobStatus ref_end = WaitFor(cluster, ref->job_id(), 180, Ended);
  const std::string ref_dir = RunDir(cluster, *ref);
  ASSERT_EQ(ref_end.state(), v1::JOB_STATE_COMPLETED) << ref_end.message() << Logs(cluster, ref_dir);
  const std::string ref_log = ReadFile(ref_dir + "/logs/g1.rank0.out") + ReadFile(ref_dir + "/logs/g1.rank0.err");
  ASSERT_NE(ref_log.find("on cuda"), std::string::npos) << "the reference did not run on the GPU:\n" << ref_log;
  const auto reference = ReadLosses(ref_dir + "/metrics/g1.rank0.jsonl");
  ASSERT_EQ(reference.size(), static_cast<size_t>(kSteps));

  auto job = cluster.client().Submit(GpuSpec("gpu-ft"));
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string run_dir = RunDir(cluster, *job);
  const std::string g1_metrics = run_dir + "/metrics/g1.rank0.jsonl";
  ASSERT_TRUE(WaitForStep(run_dir, 1, 2 * kCheckpointEvery + 1, 120)) << Logs(cluster, run_dir);
  auto pid = FindWorkerPid(run_dir, 1, 0);
  ASSERT_TRUE(pid.has_value()) << Logs(cluster, run_dir);
  const int64_t killed_after = ReadLosses(g1_metrics).rbegin()->first;
  ASSERT_LT(killed_after, kSteps - 1) << "the run ended before the kill";
  const auto t_kill = Steady::now();
  ASSERT_EQ(::kill(*pid, SIGKILL), 0);

  const RecoveryTimes times = TimeRecovery(cluster, job->job_id(), run_dir, t_kill, std::chrono::seconds(120));
  const double detect_s = times.detect_s, resume_s = times.resume_s;
  v1::JobStatus end = WaitFor(cluster, job->job_id(), 180, Ended);
  ASSERT_EQ(end.state(), v1::JOB_STATE_COMPLETED) << end.message() << Logs(cluster, run_dir);
  EXPECT_EQ(end.generation(), 2);
  EXPECT_EQ(end.restarts(), 1);

  Lineage lineage = ReadLineage(run_dir, 2);
  ASSERT_TRUE(lineage.error.empty()) << lineage.error;
  const int64_t resumed_at = lineage.resumed_at[0];
  EXPECT_GT(resumed_at, 0) << "generation 2 started from scratch";
  EXPECT_EQ(resumed_at % kCheckpointEvery, 0);
  EXPECT_LE(resumed_at, killed_after + 1);
  SampleCount samples = CountSamples(lineage, kSteps, kGpuBatch);
  EXPECT_EQ(samples.lost, 0);
  EXPECT_EQ(samples.repeated, 0);
  ASSERT_EQ(lineage.losses.size(), static_cast<size_t>(kSteps));
  double max_rel = 0;
  for (const auto& [step, loss] : lineage.losses) {
    const double want = reference.at(step);
    const double rel = std::abs(loss - want) / std::max(std::abs(want), 1e-12);
    max_rel = std::max(max_rel, rel);
    EXPECT_LE(rel, kRelTol) << "step " << step << ": " << loss << " vs " << want;
  }

  nlohmann::json result = {{"name", "gpu_worker_sigkill"},
                           {"recovered", true},
                           {"samples_lost", samples.lost},
                           {"samples_repeated", samples.repeated},
                           {"detect_s", detect_s},
                           {"resume_s", resume_s},
                           {"steps_lost", killed_after + 1 - resumed_at},
                           {"device", "cuda"},
                           {"max_rel_loss_diff", max_rel},
                           {"killed_after_step", killed_after},
                           {"resumed_at_step", resumed_at}};
  std::printf("RESULT %s\n", result.dump().c_str());
}

}  // namespace
}  // namespace kp::ft
