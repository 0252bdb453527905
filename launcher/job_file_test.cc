#include "launcher/job_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace kp::launcher {
namespace {

TEST(JobFile, ParsesEveryField) {
  auto spec = ParseJobYaml(R"(
name: tiny
model: {layers: 2, d_model: 64}
data: shards/train
dp: 2
cp: 4
cp_mode: zigzag
precision: bf16
steps: 100
checkpoint: {dir: tiny, every_steps: 50, keep_last: 2, resume: true}
priority: 7
elastic: true
max_restarts: 3
min_dp: 1
cpu_fallback: true
labels: {team: research}
)",
                           "");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name(), "tiny");
  EXPECT_NE(spec->config_yaml().find("d_model: 64"), std::string::npos);
  EXPECT_EQ(spec->data_path(), "shards/train");
  EXPECT_EQ(spec->dp(), 2);
  EXPECT_EQ(spec->cp(), 4);
  EXPECT_EQ(spec->cp_mode(), v1::CP_MODE_ZIGZAG);
  EXPECT_EQ(spec->precision(), v1::PRECISION_BF16);
  EXPECT_EQ(spec->steps(), 100);
  EXPECT_EQ(spec->checkpoint().every_steps(), 50);
  EXPECT_TRUE(spec->checkpoint().resume());
  EXPECT_EQ(spec->priority(), 7);
  EXPECT_TRUE(spec->elastic());
  EXPECT_EQ(spec->max_restarts(), 3);
  EXPECT_EQ(spec->min_dp(), 1);
  EXPECT_EQ(spec->labels().at("team"), "research");
}

TEST(JobFile, ReadsConfigRelativeToTheJobFile) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/jobs-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir + "/configs");
  std::ofstream(dir + "/configs/m.yaml") << "layers: 3\n";
  std::ofstream(dir + "/job.yaml") << "name: j\nconfig: configs/m.yaml\nsteps: 5\n";
  auto spec = LoadJobFile(dir + "/job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->config_yaml(), "layers: 3\n");
  EXPECT_EQ(spec->dp(), 1);
  std::filesystem::remove_all(dir);
}

TEST(JobFile, ErrorsNameTheKey) {
  auto err = [](const std::string& yaml) { return std::string(ParseJobYaml(yaml, "").status().message()); };
  EXPECT_NE(err("name: a\nmodel: {}\nstpes: 3\n").find("stpes: unknown key"), std::string::npos);
  EXPECT_NE(err("name: a\nmodel: {}\ndp: two\n").find("dp: wrong type"), std::string::npos);
  EXPECT_NE(err("name: a\nmodel: {}\nprecision: fp7\n").find("precision: unknown value"), std::string::npos);
  EXPECT_NE(err("name: a\nsteps: 3\n").find("config: exactly one"), std::string::npos);
  EXPECT_NE(err("name: a\nmodel: {}\nconfig_path: x\n").find("config: exactly one"), std::string::npos);
  EXPECT_NE(err("name: a\nmodel: {}\ncheckpoint: {every: 3}\n").find("checkpoint.every: unknown key"),
            std::string::npos);
  EXPECT_NE(err("name: a\nconfig: /nonexistent/x.yaml\n").find("cannot read"), std::string::npos);
  EXPECT_NE(err("[1, 2]").find("mapping"), std::string::npos);
}

}  // namespace
}  // namespace kp::launcher
