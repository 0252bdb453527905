#include "launcher/slurm/job_shape.h"

#include <gtest/gtest.h>

namespace kp::launcher {
namespace {

TEST(JobShape, TopLevelSpecFields) {
  auto shape = ParseJobShape("name: x\ndp: 4\ncp: 2\ncpu_fallback: true\n", "job.yaml");
  ASSERT_TRUE(shape.ok()) << shape.status();
  EXPECT_EQ(shape->dp, 4);
  EXPECT_EQ(shape->cp, 2);
  EXPECT_EQ(shape->world(), 8);
  EXPECT_TRUE(shape->cpu_fallback);
  EXPECT_EQ(shape->name, "x");
}

TEST(JobShape, TrainingConfigParallelSection) {
  auto shape = ParseJobShape("model: {d_model: 8}\nparallel:\n  dp: 3\n  cp: 1\n", "tiny.yaml");
  ASSERT_TRUE(shape.ok()) << shape.status();
  EXPECT_EQ(shape->world(), 3);
  shape = ParseJobShape("model: {d_model: 8}\n", "m.yaml");
  ASSERT_TRUE(shape.ok());
  EXPECT_EQ(shape->world(), 1);
}

TEST(JobShape, BadValuesNameTheField) {
  auto shape = ParseJobShape("parallel: {dp: 0}\n", "a.yaml");
  ASSERT_FALSE(shape.ok());
  EXPECT_NE(shape.status().message().find("a.yaml: parallel.dp: 0"), std::string::npos)
      << shape.status();
  shape = ParseJobShape("cp: two\n", "b.yaml");
  ASSERT_FALSE(shape.ok());
  EXPECT_NE(shape.status().message().find("b.yaml: cp: 'two'"), std::string::npos);
  shape = ParseJobShape("[1, 2]", "c.yaml");
  ASSERT_FALSE(shape.ok());
  shape = ParseJobShape("a: [", "d.yaml");
  ASSERT_FALSE(shape.ok());
  EXPECT_NE(shape.status().message().find("d.yaml"), std::string::npos);
}

TEST(JobShape, MissingFileNamesThePath) {
  auto shape = LoadJobShape("/nonexistent/job.yaml");
  ASSERT_FALSE(shape.ok());
  EXPECT_NE(shape.status().message().find("/nonexistent/job.yaml"), std::string::npos);
}

}  // namespace
}  // namespace kp::launcher
