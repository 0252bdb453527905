#include "runtime/agent/metrics_tail.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

namespace kp::agent {
namespace {

std::string TempPath(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return std::string(tmp != nullptr ? tmp : "/tmp") + "/" + name + std::to_string(::getpid());
}

void Append(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::app) << text;
}

TEST(MetricsTail, FollowsAppendsAndWaitsForWholeLines) {
  const std::string path = TempPath("m.jsonl");
  std::remove(path.c_str());
  MetricsTail tail(path);
  EXPECT_FALSE(tail.Poll());  // no file yet
  Append(path, "{\"step\": 1, \"loss\": 3.25, \"tokens_per_s\": 1200.5}\n{\"step\": 2, \"lo");
  EXPECT_TRUE(tail.Poll());
  EXPECT_EQ(tail.progress().step, 1);
  EXPECT_DOUBLE_EQ(tail.progress().loss, 3.25);
  EXPECT_DOUBLE_EQ(tail.progress().tokens_per_s, 1200.5);
  Append(path, "ss\": 3.0, \"tokens_per_s\": 900, \"lr\": 0.001}\n");
  EXPECT_TRUE(tail.Poll());
  EXPECT_EQ(tail.progress().step, 2);
  EXPECT_DOUBLE_EQ(tail.progress().loss, 3.0);
  EXPECT_FALSE(tail.Poll());
  std::remove(path.c_str());
}

TEST(MetricsTail, SkipsMalformedLines) {
  const std::string path = TempPath("bad.jsonl");
  std::remove(path.c_str());
  MetricsTail tail(path);
  Append(path, "not json\n[1,2]\n{\"step\": 7}\n\n");
  EXPECT_TRUE(tail.Poll());
  EXPECT_EQ(tail.progress().step, 7);
  EXPECT_EQ(tail.progress().malformed_lines, 2);
  EXPECT_EQ(tail.progress().lines, 1);
  std::remove(path.c_str());
}

TEST(MetricsTail, StartsOverWhenTheFileIsTruncated) {
  const std::string path = TempPath("trunc.jsonl");
  std::ofstream(path) << "{\"step\": 50, \"loss\": 1.0}\n{\"step\": 51, \"loss\": 1.0}\n";
  MetricsTail tail(path);
  EXPECT_TRUE(tail.Poll());
  EXPECT_EQ(tail.progress().step, 51);
  std::ofstream(path) << "{\"step\": 1}\n";  // a new worker rewrote it
  EXPECT_TRUE(tail.Poll());
  EXPECT_EQ(tail.progress().step, 1);
  std::remove(path.c_str());
}

// Every rank's step-time file (beside its metrics file, which only rank 0
// writes) carries the rank's own compute time per step.
TEST(MetricsTail, FollowsTheStepTimeFileBesideIt) {
  const std::string path = TempPath("g1.rank1") + ".jsonl";
  const std::string steps = TempPath("g1.rank1") + ".steps.jsonl";
  std::remove(path.c_str());
  std::remove(steps.c_str());
  MetricsTail tail(path);
  EXPECT_FALSE(tail.Poll());
  EXPECT_EQ(tail.progress().timed_step, -1);
  Append(steps, "{\"step\":0,\"rank\":1,\"compute_s\":0.25,\"comm_wait_s\":0.001}\n{\"step\":1,\"ra");
  EXPECT_TRUE(tail.Poll());
  EXPECT_EQ(tail.progress().timed_step, 0);
  EXPECT_DOUBLE_EQ(tail.progress().compute_s, 0.25);
  EXPECT_DOUBLE_EQ(tail.progress().comm_wait_s, 0.001);
  EXPECT_EQ(tail.progress().step, 0);  // no metrics line: progress unchanged
  Append(steps, "nk\":1,\"compute_s\":0.3125,\"comm_wait_s\":0.0}\n{\"step\": 9, \"loss\": 1}\n");
  EXPECT_TRUE(tail.Poll());
  EXPECT_EQ(tail.progress().timed_step, 1);
  EXPECT_DOUBLE_EQ(tail.progress().compute_s, 0.3125);
  EXPECT_EQ(tail.progress().malformed_lines, 1);  // a metrics line in the step-time file
  Append(path, "{\"step\": 1, \"loss\": 2.5}\n");
  EXPECT_TRUE(tail.Poll());
  EXPECT_EQ(tail.progress().step, 1);
  EXPECT_EQ(tail.progress().timed_step, 1);
  std::remove(path.c_str());
  std::remove(steps.c_str());
}

}  // namespace
}  // namespace kp::agent
