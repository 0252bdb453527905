// kp-train's side of in-memory snapshots, in process (RunTraining, one rank,
// a loopback agent): a run that takes snapshots and "crashes" after the
// last disk checkpoint resumes from the newer snapshot and continues the
// uninterrupted run bit for bit; a snapshot that is missing, unreachable or
// not newer than the disk checkpoint falls back to the disk checkpoint.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "runtime/comm/fake_communicator.h"

#include "runtime/engine/checkpoint/checkpoint_manager.h"
#include "runtime/snapshot/loopback_agent.h"
#include "runtime/worker/run_training.h"
#include "runtime/worker/run_training_test_util.h"

namespace kp::snapshot {
namespace {

namespace fs = std::filesystem;
constexpr char kToken[] = "run-training-snapshot-token";

std::string TempDir(const std::string& name) { return worker::testing::FreshTempDir("rts_" + name); }

engine::Config Small() {
  engine::Config config = worker::testing::SmallTinyConfig();
  config.training.grad_accum = 1;
  return config;
}

worker::RunOptions Options(const std::string& dir) { return worker::testing::CpuRunOptions(dir); }

ckpt::TensorMap FinalModel(const std::string& run_dir) {
  auto latest = ckpt::CheckpointManager::LatestComplete(run_dir);
  EXPECT_TRUE(latest.ok()) << latest.status();
  auto loaded = ckpt::CheckpointManager::Load(*latest);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  return loaded.ok() ? loaded->parts.at("model") : ckpt::TensorMap{};
}

class RunTrainingSnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto a = LoopbackAgent::Start(kToken);
    ASSERT_TRUE(a.ok()) << a.status();
    agent_ = std::move(*a);
    // The uninterrupted run.
    straight_ = TempDir("straight");
    auto r = worker::RunTraining(Small(), Options(straight_));
    ASSERT_TRUE(r.ok()) << r.status();
    reference_ = r->losses;
    // The run that takes snapshots every 2 steps and dies after step 6: its
    // disk checkpoints are steps 4 and 7 (the last step's); the crash is
    // before the one of step 7, which is removed.
    dir_ = TempDir("crashed");
    worker::RunOptions o = Options(dir_);
    o.snapshot = Snapshots(1);
    o.snapshot.every_steps = 2;
    o.snapshot.targets = {agent_->address()};
    o.snapshot.wait_when_busy = true;  // in process a step takes milliseconds: keep every snapshot
    o.stop_after_steps = 7;
    auto first = worker::RunTraining(Small(), o);
    ASSERT_TRUE(first.ok()) << first.status();
    fs::remove_all(fs::path(ckpt::CheckpointManager::CheckpointsDir(dir_)) / ckpt::CheckpointManager::StepDirName(7));
    std::vector<int64_t> held;
    for (const auto& k : agent_->Held()) held.push_back(k.step);
    ASSERT_EQ(held, (std::vector<int64_t>{4, 6})) << "kept: the newest two";
  }
  WorkerSnapshotOptions Snapshots(int64_t generation) const {
    WorkerSnapshotOptions s;
    s.job_id = "jtest";
    s.generation = generation;
    s.token = kToken;
    s.timeout_ms = 2000;
    return s;
  }
  // Resumes generation 2 naming `step`@`address`; returns the steps it ran.
  std::vector<double> Resume(const std::string& address, int64_t step) {
    worker::RunOptions o = Options(dir_);
    o.resume = true;
    o.snapshot = Snapshots(2);
    o.snapshot.resume_address = address;
    o.snapshot.resume_step = step;
    auto r = worker::RunTraining(Small(), o);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->losses : std::vector<double>{};
  }
  void ExpectTail(const std::vector<double>& losses, size_t from) {
    ASSERT_EQ(losses.size(), reference_.size() - from);
    for (size_t i = 0; i < losses.size(); ++i) EXPECT_EQ(losses[i], reference_[from + i]) << "step " << from + i;
    ckpt::TensorMap a = FinalModel(straight_), b = FinalModel(dir_);
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [name, t] : a) EXPECT_TRUE(at::equal(t, b.at(name))) << name;
  }

  std::unique_ptr<LoopbackAgent> agent_;
  std::string straight_, dir_;
  std::vector<double> reference_;
};

TEST_F(RunTrainingSnapshotTest, ResumesFromTheNewerSnapshotBitwise) {
  ExpectTail(Resume(agent_->address(), 6), 6);  // steps 6 and 7 only
}

TEST_F(RunTrainingSnapshotTest, MissingSnapshotFallsBackToDisk) {
  ExpectTail(Resume(agent_->address(), 8), 4);  // not held: disk step 4
}

TEST_F(RunTrainingSnapshotTest, UnreachableAgentFallsBackToDisk) {
  ExpectTail(Resume("127.0.0.1:1", 6), 4);
}

TEST_F(RunTrainingSnapshotTest, SnapshotNotNewerThanDiskIsNotUsed) {
  ExpectTail(Resume(agent_->address(), 4), 4);  // as new as the disk checkpoint: disk
}

// Two ranks (threads over the fake backend): they resume from snapshots only
// if both can; one rank whose snapshot cannot be fetched sends both to disk.
class TwoRanks {
 public:
  explicit TwoRanks(const std::string& dir) : dir_(dir) {
    config_ = Small();
    config_.parallel.dp = 2;
    config_.training.micro_batch = 2;
  }
  // Runs both ranks with per-rank options; returns each rank's losses.
  std::vector<std::vector<double>> Run(const std::function<void(int, worker::RunOptions&)>& set) {
    comm::FakeWorld world(2, std::chrono::seconds(60));
    std::vector<std::vector<double>> losses(2);
    std::vector<absl::Status> status(2);
    std::vector<std::thread> ranks;
    for (int r = 0; r < 2; ++r) {
      ranks.emplace_back([&, r] {
        auto comm = world.Join(r);
        worker::RunOptions o = Options(dir_);
        o.rank = r;
        o.world_size = 2;
        o.communicator = comm.get();
        set(r, o);
        auto result = worker::RunTraining(config_, o);
        status[r] = result.status();
        if (result.ok()) losses[r] = result->losses;
      });
    }
    for (auto& t : ranks) t.join();
    EXPECT_TRUE(status[0].ok()) << status[0];
    EXPECT_TRUE(status[1].ok()) << status[1];
    return losses;
  }

 private:
  std::string dir_;
  engine::Config config_;
};

TEST(RunTrainingSnapshotTwoRanks, EveryRankOrNone) {
  auto agent = LoopbackAgent::Start(kToken);
  ASSERT_TRUE(agent.ok()) << agent.status();
  const std::string address = (*agent)->address();
  auto snapshots = [&](int64_t generation) {
    WorkerSnapshotOptions s;
    s.job_id = "j2";
    s.generation = generation;
    s.token = kToken;
    s.timeout_ms = 2000;
    return s;
  };
  const std::string dir = TempDir("two_ranks");
  TwoRanks job(dir);
  job.Run([&](int, worker::RunOptions& o) {
    o.snapshot = snapshots(1);
    o.snapshot.every_steps = 2;
    o.snapshot.targets = {address};
    o.snapshot.wait_when_busy = true;
    o.stop_after_steps = 7;
  });
  const fs::path last = fs::path(ckpt::CheckpointManager::CheckpointsDir(dir)) / ckpt::CheckpointManager::StepDirName(7);
  fs::remove_all(last);
  // Rank 1 names an agent that is gone: both ranks resume from disk (step 4).
  auto fallback = job.Run([&](int r, worker::RunOptions& o) {
    o.resume = true;
    o.stop_after_steps = 7;  // leave the snapshots of step 6 for the next resume
    o.snapshot = snapshots(2);
    o.snapshot.resume_address = r == 0 ? address : "127.0.0.1:1";
    o.snapshot.resume_step = 6;
  });
  EXPECT_EQ(fallback[0].size(), 3u);  // steps 4, 5, 6
  EXPECT_EQ(fallback[1].size(), 3u);
  fs::remove_all(last);
  // Both can: both resume from the snapshots of step 6.
  auto resumed = job.Run([&](int, worker::RunOptions& o) {
    o.resume = true;
    o.snapshot = snapshots(2);
    o.snapshot.resume_address = address;
    o.snapshot.resume_step = 6;
  });
  EXPECT_EQ(resumed[0].size(), 2u);  // steps 6, 7
  EXPECT_EQ(resumed[1].size(), 2u);
}

}  // namespace
}  // namespace kp::snapshot
