#include "runtime/worker/step_time/step_timer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <fstream>
#include <thread>
#include <vector>

namespace kp::worker::step_time {
namespace {

using std::chrono::milliseconds;

class FakeBatches final : public engine::BatchSource {
 public:
  absl::StatusOr<at::Tensor> Batch(int64_t step, int micro) override {
    calls.emplace_back(step, micro);
    return at::randint(0, 7, {2, 5}, at::kLong);
  }
  std::vector<std::pair<int64_t, int>> calls;
};

// Finish() stands for the all-reduce wait: it sleeps `wait`.
class FakeSync final : public engine::GradientSync {
 public:
  explicit FakeSync(milliseconds wait) : wait_(wait) {}
  void PrepareForBackward(bool last) override { prepared.push_back(last); }
  absl::Status Finish() override {
    std::this_thread::sleep_for(wait_);
    ++finished;
    return result;
  }
  std::vector<bool> prepared;
  int finished = 0;
  absl::Status result;

 private:
  milliseconds wait_;
};

std::string TempFile() {
  char tmpl[] = "/tmp/kp_step_timer_XXXXXX";
  const int fd = mkstemp(tmpl);
  EXPECT_GE(fd, 0);
  close(fd);
  return tmpl;
}

// Two steps of two micro-batches: "compute" (sleeps between the first batch
// and Finish, plus the test-only slow-down) and the sync wait are told
// apart; one line per step.
TEST(StepTimer, SeparatesComputeFromTheGradientWait) {
  FakeBatches batches;
  FakeSync sync(milliseconds(60));
  const std::string path = TempFile();
  auto timer = StepTimer::Create(&batches, &sync, {path, 3, milliseconds(40), nullptr});
  ASSERT_TRUE(timer.ok()) << timer.status();
  for (int64_t step = 5; step < 7; ++step) {
    for (int micro = 0; micro < 2; ++micro) {
      ASSERT_TRUE((*timer)->batches()->Batch(step, micro).ok());
      std::this_thread::sleep_for(milliseconds(25));  // forward + backward
      (*timer)->sync()->PrepareForBackward(micro == 1);
    }
    ASSERT_TRUE((*timer)->sync()->Finish().ok());
  }
  EXPECT_EQ(batches.calls.size(), 4u);
  EXPECT_EQ(sync.prepared, (std::vector<bool>{false, true, false, true}));
  EXPECT_EQ(sync.finished, 2);
  std::ifstream in(path);
  std::vector<StepTime> lines;
  for (std::string line; std::getline(in, line);) {
    auto t = ParseStepTime(line);
    ASSERT_TRUE(t.has_value()) << line;
    lines.push_back(*t);
  }
  ASSERT_EQ(lines.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(lines[i].step, 5 + i);
    EXPECT_EQ(lines[i].rank, 3);
    // 40 ms slow-down + 2 x 25 ms compute; the 60 ms wait is not in it.
    EXPECT_GE(lines[i].compute_s, 0.090);
    EXPECT_LT(lines[i].compute_s, 0.090 + 0.5);
    EXPECT_GE(lines[i].comm_wait_s, 0.060);
    EXPECT_LT(lines[i].comm_wait_s, 0.060 + 0.5);
  }
  ASSERT_TRUE((*timer)->last().has_value());
  EXPECT_EQ((*timer)->last()->step, 6);
  std::remove(path.c_str());
}

TEST(StepTimer, PassesSyncErrorsThroughAndWritesNothingWithoutAPath) {
  FakeBatches batches;
  FakeSync sync(milliseconds(0));
  sync.result = absl::DeadlineExceededError("gloo AllReduce timed out");
  auto timer = StepTimer::Create(&batches, &sync, {});
  ASSERT_TRUE(timer.ok());
  ASSERT_TRUE((*timer)->batches()->Batch(0, 0).ok());
  EXPECT_EQ((*timer)->sync()->Finish().code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE((*timer)->last().has_value());
  EXPECT_EQ((*timer)->last()->step, 0);
}

TEST(StepTimer, UnwritablePathNamesTheFile) {
  FakeBatches batches;
  FakeSync sync(milliseconds(0));
  auto timer = StepTimer::Create(&batches, &sync, {"/nonexistent-dir/x.steps.jsonl", 0, {}, nullptr});
  ASSERT_FALSE(timer.ok());
  EXPECT_NE(timer.status().message().find("/nonexistent-dir/x.steps.jsonl"), std::string::npos);
}

TEST(StepTimer, NoFenceOnCpu) { EXPECT_EQ(CurrentStreamFence(c10::Device(c10::kCPU)), nullptr); }

}  // namespace
}  // namespace kp::worker::step_time
