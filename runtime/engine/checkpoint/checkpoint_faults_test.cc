// What the checkpoint manager does when a write fails or a checkpoint on
// disk is damaged: failed writes are retried (never silently dropped), a
// corrupt checkpoint is skipped for the previous good one, and a staging
// directory left by a killed writer is never loaded.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "runtime/engine/checkpoint/checkpoint_manager.h"

namespace kp::ckpt {
namespace {

namespace fs = std::filesystem;

std::string RunDir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = (fs::path(tmp ? tmp : "/tmp") /
                           ("faults_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name())))
                              .string();
  fs::remove_all(dir);
  return dir;
}

std::map<std::string, TensorMap> Parts(int seed) {
  at::manual_seed(seed);
  return {{"model", {{"w", at::randn({32, 16})}, {"b", at::randn({16})}}},
          {"optimizer", {{"w.exp_avg", at::randn({32, 16})}}}};
}

CheckpointState State(int64_t step) {
  CheckpointState s;
  s.step = step;
  s.data_position = step * 8;
  s.config_hash = "cfg";
  return s;
}

std::string Dir(const std::string& run, int64_t step) {
  return CheckpointManager::CheckpointsDir(run) + "/" + CheckpointManager::StepDirName(step);
}

TEST(CheckpointFaults, TransientWriteFailureIsRetried) {
  const std::string run = RunDir();
  std::atomic<int> calls{0};
  CheckpointOptions o{.run_dir = run};
  o.retry_backoff = std::chrono::milliseconds(1);
  o.fault_for_test = [&](int64_t, int attempt) {
    ++calls;
    return attempt == 1 ? absl::UnavailableError("injected: disk hiccup") : absl::OkStatus();
  };
  CheckpointManager m(o);
  ASSERT_TRUE(m.Save(State(5), Parts(1)).ok());
  EXPECT_EQ(calls.load(), 2);
  auto loaded = CheckpointManager::LoadNewestGood(run);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->state.step, 5);
}

TEST(CheckpointFaults, PersistentFailureIsReportedAfterEveryAttemptAndTheNextSaveWorks) {
  const std::string run = RunDir();
  std::atomic<int> calls{0};
  CheckpointOptions o{.run_dir = run};
  o.write_attempts = 3;
  o.retry_backoff = std::chrono::milliseconds(1);
  o.fault_for_test = [&](int64_t step, int) {
    if (step != 10) return absl::OkStatus();
    ++calls;
    return absl::ResourceExhaustedError("injected: disk full");
  };
  CheckpointManager m(o);
  ASSERT_TRUE(m.Save(State(5), Parts(1)).ok());
  absl::Status failed = m.Save(State(10), Parts(2));
  EXPECT_EQ(failed.code(), absl::StatusCode::kResourceExhausted) << failed;
  EXPECT_EQ(calls.load(), 3);
  // Nothing of step 10 is visible; step 5 is still the newest.
  EXPECT_FALSE(fs::exists(Dir(run, 10)));
  EXPECT_EQ(CheckpointManager::LoadNewestGood(run)->state.step, 5);
  // The caller may go on: the next save is independent of the failed one.
  ASSERT_TRUE(m.Save(State(15), Parts(3)).ok());
  EXPECT_EQ(CheckpointManager::LoadNewestGood(run)->state.step, 15);
}

TEST(CheckpointFaults, CorruptNewestIsSkippedForThePreviousGoodOne) {
  const std::string run = RunDir();
  CheckpointManager m({.run_dir = run});
  ASSERT_TRUE(m.Save(State(5), Parts(1)).ok());
  ASSERT_TRUE(m.Save(State(10), Parts(2)).ok());
  // Flip one byte in the tensor data of step 10 (same size, valid header:
  // only the checksum can tell).
  const std::string model = Dir(run, 10) + "/model.safetensors";
  {
    std::fstream f(model, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-3, std::ios::end);
    char c;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x5a);
    f.seekp(-3, std::ios::end);
    f.write(&c, 1);
  }
  // Still "complete" by the cheap test, but it does not load.
  EXPECT_EQ(*CheckpointManager::LatestComplete(run), Dir(run, 10));
  auto direct = CheckpointManager::Load(Dir(run, 10));
  EXPECT_EQ(direct.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(direct.status().message().find("CRC-32"), std::string::npos) << direct.status();
  auto loaded = CheckpointManager::LoadNewestGood(run);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->state.step, 5);
  auto original = Parts(1);
  EXPECT_TRUE(at::equal(loaded->parts.at("model").at("w"), original.at("model").at("w")));
  // Asking again gives the same answer (no state that could loop).
  EXPECT_EQ(CheckpointManager::LoadNewestGood(run)->state.step, 5);
}

TEST(CheckpointFaults, TruncatedPartIsSkipped) {
  const std::string run = RunDir();
  CheckpointManager m({.run_dir = run});
  ASSERT_TRUE(m.Save(State(5), Parts(1)).ok());
  ASSERT_TRUE(m.Save(State(10), Parts(2)).ok());
  const std::string opt = Dir(run, 10) + "/optimizer.safetensors";
  fs::resize_file(opt, fs::file_size(opt) / 2);
  EXPECT_EQ(CheckpointManager::LoadNewestGood(run)->state.step, 5);
}

TEST(CheckpointFaults, AllCorruptIsDataLossNamingEach) {
  const std::string run = RunDir();
  CheckpointManager m({.run_dir = run});
  ASSERT_TRUE(m.Save(State(5), Parts(1)).ok());
  ASSERT_TRUE(m.Save(State(10), Parts(2)).ok());
  for (int64_t step : {5, 10}) {
    const std::string p = Dir(run, step) + "/model.safetensors";
    std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-1, std::ios::end);
    f.write("\x7f", 1);
  }
  auto loaded = CheckpointManager::LoadNewestGood(run);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find("step_00000005"), std::string::npos) << loaded.status();
  EXPECT_NE(loaded.status().message().find("step_00000010"), std::string::npos) << loaded.status();
  EXPECT_EQ(CheckpointManager::LoadNewestGood(RunDir() + "-empty").status().code(), absl::StatusCode::kNotFound);
}

// The test hook holds a save in its staging directory; what a kill leaves
// there is never loaded and is removed by the next commit.
TEST(CheckpointFaults, WriteDelayHookHoldsTheStagingDirectory) {
  const std::string run = RunDir();
  ::setenv("KP_TEST_CHECKPOINT_WRITE_DELAY_MS", "400", 1);
  ::setenv("KP_TEST_CHECKPOINT_WRITE_DELAY_STEP", "10", 1);
  CheckpointManager m({.run_dir = run});
  ::unsetenv("KP_TEST_CHECKPOINT_WRITE_DELAY_MS");
  ::unsetenv("KP_TEST_CHECKPOINT_WRITE_DELAY_STEP");
  ASSERT_TRUE(m.Save(State(5), Parts(1)).ok());  // not delayed
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(m.SaveAsync(State(10), Parts(2)).ok());
  const std::string staging = CheckpointManager::CheckpointsDir(run) + "/.staging.step_00000010";
  bool seen = false;
  for (int i = 0; i < 200 && !seen; ++i) {
    seen = fs::exists(staging + "/model.safetensors");
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(seen);
  // Mid-write: the staging directory is there, step 10 is not visible.
  EXPECT_EQ(CheckpointManager::LoadNewestGood(run)->state.step, 5);
  EXPECT_EQ(CheckpointManager::LatestComplete(run).value(), Dir(run, 5));
  ASSERT_TRUE(m.Wait().ok());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(400));
  EXPECT_EQ(CheckpointManager::LoadNewestGood(run)->state.step, 10);
  EXPECT_FALSE(fs::exists(staging));
}

TEST(CheckpointFaults, StateJsonRecordsACrcPerPart) {
  const std::string run = RunDir();
  CheckpointManager m({.run_dir = run});
  ASSERT_TRUE(m.Save(State(5), Parts(1)).ok());
  std::ifstream in(Dir(run, 5) + "/state.json");
  nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_TRUE(j["parts"]["model"]["crc32"].is_number_unsigned()) << j.dump();
  EXPECT_TRUE(j["parts"]["optimizer"]["crc32"].is_number_unsigned()) << j.dump();
  EXPECT_NE(j["parts"]["model"]["crc32"], j["parts"]["optimizer"]["crc32"]);
}

}  // namespace
}  // namespace kp::ckpt
