#include "runtime/worker/profile/step_profiler.h"

#include <fstream>
#include <sstream>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace kp::worker::profile {
namespace {

struct Log {
  std::vector<std::string> events;
};

class FakeRecorder final : public TraceRecorder {
 public:
  explicit FakeRecorder(Log* log) : log_(log) {}
  absl::Status Start() override {
    log_->events.push_back("start");
    return absl::OkStatus();
  }
  absl::Status StopAndSave(const std::string& path) override {
    log_->events.push_back("stop " + path);
    return absl::OkStatus();
  }

 private:
  Log* log_;
};

class CountingBatches final : public engine::BatchSource {
 public:
  explicit CountingBatches(Log* log) : log_(log) {}
  absl::StatusOr<at::Tensor> Batch(int64_t step, int micro) override {
    log_->events.push_back("batch " + std::to_string(step) + "." + std::to_string(micro));
    return at::full({1, 2}, step, at::kLong);
  }

 private:
  Log* log_;
};

TEST(ParseStepWindow, AcceptsRangesAndSingleSteps) {
  auto w = ParseStepWindow("5:8");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->first, 5);
  EXPECT_EQ(w->last, 8);
  w = ParseStepWindow("3");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->last, 4);
}

TEST(ParseStepWindow, RejectsBadText) {
  for (const char* bad : {"", "a:3", "3:x", "5:5", "6:2", "-1:2", "1:2:3"}) {
    auto w = ParseStepWindow(bad);
    EXPECT_FALSE(w.ok()) << bad;
    if (!w.ok()) {
      EXPECT_NE(std::string(w.status().message()).find("--profile_steps"), std::string::npos);
    }
  }
}

TEST(ProfiledBatches, RecordsExactlyTheWindowOfWholeSteps) {
  Log log;
  CountingBatches inner(&log);
  ProfiledBatches p(&inner, {2, 4}, std::make_unique<FakeRecorder>(&log), "/tmp/t.json");
  for (int64_t step = 0; step < 6; ++step) {
    for (int micro = 0; micro < 2; ++micro) {
      auto b = p.Batch(step, micro);
      ASSERT_TRUE(b.ok());
      EXPECT_EQ((*b)[0][0].item<int64_t>(), step);  // passes the inner batch through
    }
  }
  const std::vector<std::string> want = {
      "batch 0.0", "batch 0.1", "batch 1.0", "batch 1.1", "start", "batch 2.0", "batch 2.1",
      "batch 3.0", "batch 3.1", "stop /tmp/t.json", "batch 4.0", "batch 4.1", "batch 5.0", "batch 5.1"};
  EXPECT_EQ(log.events, want);
  EXPECT_TRUE(p.saved());
}

TEST(ProfiledBatches, FinishSavesAWindowTheRunEndedInside) {
  Log log;
  CountingBatches inner(&log);
  {
    ProfiledBatches p(&inner, {1, 100}, std::make_unique<FakeRecorder>(&log), "t.json");
    ASSERT_TRUE(p.Batch(0, 0).ok());
    ASSERT_TRUE(p.Batch(1, 0).ok());
    EXPECT_TRUE(p.recording());
    ASSERT_TRUE(p.Finish().ok());
    EXPECT_FALSE(p.recording());
  }  // the destructor does not save twice
  EXPECT_EQ(std::count(log.events.begin(), log.events.end(), "stop t.json"), 1);
}

TEST(ProfiledBatches, AResumedRunStartsInsideTheWindow) {
  Log log;
  CountingBatches inner(&log);
  ProfiledBatches p(&inner, {2, 5}, std::make_unique<FakeRecorder>(&log), "t.json");
  ASSERT_TRUE(p.Batch(3, 0).ok());  // resumed at step 3
  EXPECT_TRUE(p.recording());
}

TEST(KinetoRecorder, WritesAChromeTraceOnCpu) {
  auto rec = MakeKinetoRecorder(/*cuda=*/false);
  ASSERT_TRUE(rec->Start().ok());
  at::Tensor a = at::randn({64, 64});
  at::Tensor b = at::mm(a, a);
  const std::string path = ::testing::TempDir() + "/kineto_trace.json";
  absl::Status s = rec->StopAndSave(path);
  ASSERT_TRUE(s.ok()) << s;
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find("traceEvents"), std::string::npos);
  EXPECT_NE(text.str().find("aten::mm"), std::string::npos);
}

}  // namespace
}  // namespace kp::worker::profile
