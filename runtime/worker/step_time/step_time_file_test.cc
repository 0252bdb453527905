#include "runtime/worker/step_time/step_time_file.h"

#include <gtest/gtest.h>

#include <random>

namespace kp::worker::step_time {
namespace {

TEST(StepTimePath, BesideTheMetricsFile) {
  EXPECT_EQ(StepTimePath("/r/metrics/g1.rank1.jsonl"), "/r/metrics/g1.rank1.steps.jsonl");
  EXPECT_EQ(StepTimePath("/r/metrics.txt"), "/r/metrics.txt.steps.jsonl");
  EXPECT_EQ(StepTimePath(".jsonl"), ".steps.jsonl");
}

TEST(StepTimeLine, RoundTripsRandomValues) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(1e-4, 5.0);
  for (int i = 0; i < 50; ++i) {
    StepTime t{static_cast<int64_t>(rng() % 100000), static_cast<int>(rng() % 64), u(rng), u(rng)};
    auto back = ParseStepTime(FormatStepTime(t));
    ASSERT_TRUE(back.has_value()) << FormatStepTime(t);
    EXPECT_EQ(back->step, t.step);
    EXPECT_EQ(back->rank, t.rank);
    EXPECT_DOUBLE_EQ(back->compute_s, t.compute_s);
    EXPECT_DOUBLE_EQ(back->comm_wait_s, t.comm_wait_s);
  }
}

TEST(StepTimeLine, RejectsOtherLines) {
  EXPECT_FALSE(ParseStepTime("{\"step\":3,\"loss\":2.5}"));  // a metrics line
  EXPECT_FALSE(ParseStepTime("{\"step\":3,\"rank\":0,\"compute_s\":-1,\"comm_wait_s\":0}"));
  EXPECT_FALSE(ParseStepTime("{\"step\":3,\"rank\":0,\"compute_s\":\"x\",\"comm_wait_s\":0}"));
  EXPECT_FALSE(ParseStepTime("not json"));
}

TEST(SlowDown, TestOnlyEnvValue) {
  EXPECT_EQ(SlowDownFor(nullptr, 1)->count(), 0);
  EXPECT_EQ(SlowDownFor("", 1)->count(), 0);
  EXPECT_EQ(SlowDownFor("1:200", 1)->count(), 200);
  EXPECT_EQ(SlowDownFor("1:200", 0)->count(), 0);
  EXPECT_EQ(SlowDownFor("0:5,2:75", 2)->count(), 75);
  for (const char* bad : {"1", "x:5", "1:y", "-1:5", "1:-5", "1:5:6"}) {
    auto s = SlowDownFor(bad, 1);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    if (!s.ok()) {
      EXPECT_NE(s.status().message().find("KP_TEST_SLOW_RANK"), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace kp::worker::step_time
