// Validated resume (resume_check.h), alone and through RunTraining: a
// checkpoint whose record was tampered with stops the resumed run before its
// first step with an error naming the field (INVALID_ARGUMENT: kp-train
// exits 2, permanent); a corrupt newest checkpoint is skipped for the
// previous one; a checkpoint write that fails does not stop training.
#include "runtime/worker/resume_check.h"
#include "runtime/worker/run_training_test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/comm/fake_communicator.h"
#include "runtime/engine/checkpoint/checkpoint_manager.h"
#include "runtime/worker/fault/exit_codes.h"
#include "runtime/worker/run_training.h"

namespace kp::worker {
namespace {

namespace fs = std::filesystem;

ResumePoint Point() {
  ResumePoint p;
  p.step = 40;
  p.data_position = 40 * 8;
  p.learning_rate = 0.0021370853;
  p.cpu_rng = std::string("\x01\x02\x00\xfe generator", 14);
  p.optimizer_step = 40;
  return p;
}

ckpt::CheckpointState Recorded(const ResumePoint& p) {
  ckpt::CheckpointState s;
  RecordResumePoint(p, &s);
  return s;
}

const std::string kDir = "/runs/x/checkpoints/step_00000040";

TEST(ResumeCheck, AgreeingRecordPasses) {
  EXPECT_TRUE(CheckResume(kDir, Recorded(Point()), Point()).ok());
  // Older checkpoints recorded only step and data position: still checked.
  ckpt::CheckpointState old;
  old.step = 40;
  old.data_position = 320;
  EXPECT_TRUE(CheckResume(kDir, old, Point()).ok());
  old.data_position = 321;
  EXPECT_FALSE(CheckResume(kDir, old, Point()).ok());
}

void ExpectFails(const std::function<void(ckpt::CheckpointState&)>& tamper, const std::string& field) {
  ckpt::CheckpointState s = Recorded(Point());
  tamper(s);
  absl::Status st = CheckResume(kDir, s, Point());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << field << ": " << st;
  EXPECT_NE(st.message().find(field + ":"), std::string::npos) << st;
  EXPECT_NE(st.message().find(kDir), std::string::npos) << st;
  EXPECT_EQ(fault::ExitCodeFor(st), fault::kExitBadConfig);
}

TEST(ResumeCheck, EachTamperedFieldIsNamed) {
  ExpectFails([](auto& s) { s.extra["resume.lr"] = "0.0021370854"; }, "learning_rate");
  ExpectFails([](auto& s) { s.extra["resume.lr"] = "fast"; }, "learning_rate");
  ExpectFails([](auto& s) { s.data_position += 8; }, "data_position");
  ExpectFails([](auto& s) { s.rng["cpu"][3] ^= 1; }, "rng");
  ExpectFails([](auto& s) { s.extra["resume.optimizer_step"] = "39"; }, "optimizer_step");
  // state.json says 45 but lives in step_00000040.
  ExpectFails([](auto& s) { s.step = 45; }, "step");
  ckpt::CheckpointState s = Recorded(Point());
  ResumePoint moved = Point();
  moved.step = 41;
  EXPECT_NE(CheckResume("/elsewhere", s, moved).message().find("step:"), std::string::npos);
}

TEST(ResumeCheck, OptimizerStepIsTheLargestStepEntry) {
  std::map<std::string, at::Tensor> sd = {{"w.exp_avg", at::randn({3})},
                                          {"w.step", at::scalar_tensor(7, at::kLong)},
                                          {"b.step", at::scalar_tensor(9, at::kLong)}};
  EXPECT_EQ(OptimizerStep(sd), 9);
  EXPECT_FALSE(OptimizerStep({}).has_value());
}

// ---- Through RunTraining (CPU, a small model, seconds) ----

std::string TempDir(const std::string& name) { return testing::FreshTempDir("resume_" + name); }

engine::Config Small() {
  engine::Config config = testing::SmallTinyConfig();
  config.model.n_layers = 1;
  config.model.max_seq_len = 16;
  config.training.seq_len = 16;
  config.training.micro_batch = 2;
  config.training.grad_accum = 1;
  config.training.steps = 12;
  config.training.keep_checkpoints = 5;
  config.data.builtin.num_tokens = 1 << 14;
  return config;
}

RunOptions Options(const std::string& dir) { return testing::CpuRunOptions(dir); }

std::string StepDir(const std::string& run, int64_t step) {
  return ckpt::CheckpointManager::CheckpointsDir(run) + "/" + ckpt::CheckpointManager::StepDirName(step);
}

// Runs steps [0, 8): checkpoints at 4 and 8.
std::string Interrupted(const std::string& name) {
  const std::string dir = TempDir(name);
  RunOptions o = Options(dir);
  o.stop_after_steps = 8;
  auto r = RunTraining(Small(), o);
  EXPECT_TRUE(r.ok()) << r.status();
  return dir;
}

absl::StatusOr<engine::TrainResult> Resume(const std::string& dir, const engine::Config& c = Small()) {
  RunOptions o = Options(dir);
  o.resume = true;
  return RunTraining(c, o);
}

void EditState(const std::string& checkpoint_dir, const std::function<void(nlohmann::json&)>& edit) {
  const std::string path = checkpoint_dir + "/state.json";
  std::ifstream in(path);
  nlohmann::json j = nlohmann::json::parse(in);
  edit(j);
  std::ofstream(path) << j.dump(2);
}

TEST(ResumeThroughRunTraining, RecordIsWrittenAndAnUntouchedResumePasses) {
  const std::string dir = Interrupted("untouched");
  std::ifstream in(StepDir(dir, 8) + "/state.json");
  nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_TRUE(j["extra"].contains("resume.lr")) << j.dump();
  EXPECT_TRUE(j["extra"].contains("resume.optimizer_step")) << j.dump();
  EXPECT_EQ(j["extra"]["resume.optimizer_step"], "8");
  EXPECT_TRUE(j["rng"].contains("cpu")) << j.dump();
  auto r = Resume(dir);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->losses.size(), 4u);  // steps 8..11
}

TEST(ResumeThroughRunTraining, TamperedRecordStopsBeforeTheFirstStep) {
  struct Case {
    std::string field;
    std::function<void(nlohmann::json&)> edit;
  };
  const std::vector<Case> cases = {
      {"learning_rate", [](nlohmann::json& j) { j["extra"]["resume.lr"] = "0.5"; }},
      {"data_position", [](nlohmann::json& j) { j["data_position"] = j["data_position"].get<int64_t>() + 1; }},
      {"optimizer_step", [](nlohmann::json& j) { j["extra"]["resume.optimizer_step"] = "7"; }},
      {"step", [](nlohmann::json& j) { j["step"] = 9; }},
  };
  const std::string dir = Interrupted("tampered");
  for (const Case& c : cases) {
    // A fresh copy of the good checkpoint for each case.
    const std::string run = TempDir("tampered_" + c.field);
    fs::copy(dir + "/checkpoints", run + "/checkpoints", fs::copy_options::recursive);
    fs::copy(dir + "/corpus", run + "/corpus", fs::copy_options::recursive);
    EditState(StepDir(run, 8), c.edit);
    auto r = Resume(run);
    ASSERT_FALSE(r.ok()) << c.field;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_NE(r.status().message().find(c.field + ":"), std::string::npos) << r.status();
    EXPECT_EQ(fault::ExitCodeFor(r.status()), fault::kExitBadConfig);
    // Nothing trained: no step 8 metrics line was written by the resumed run.
    std::ifstream metrics(run + "/metrics.jsonl");
    std::string line;
    int lines = 0;
    while (std::getline(metrics, line)) ++lines;
    EXPECT_EQ(lines, 0) << c.field;
  }
  // The schedule changed under the run (a longer cosine): the learning rate
  // at step 8 differs from the recorded one.
  engine::Config longer = Small();
  longer.training.steps = 40;
  auto r = Resume(dir, longer);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("learning_rate:"), std::string::npos) << r.status();
  // ... unless the caller says the change is meant.
  RunOptions allowed = Options(dir);
  allowed.resume = true;
  allowed.allow_schedule_change = true;
  auto ok = RunTraining(longer, allowed);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->losses.size(), 32u);  // steps 8..39
}

TEST(ResumeThroughRunTraining, CorruptNewestCheckpointFallsBackToThePreviousOne) {
  const std::string dir = Interrupted("corrupt");
  const std::string model = StepDir(dir, 8) + "/model.safetensors";
  {
    std::fstream f(model, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-5, std::ios::end);
    f.write("\x13\x37", 2);
  }
  auto r = Resume(dir);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->losses.size(), 8u);  // from step 4, not 8
  // Every checkpoint corrupt: a permanent error (exit 2), not a restart loop.
  const std::string all = Interrupted("all_corrupt");
  for (int64_t step : {4, 8}) {
    std::fstream f(StepDir(all, step) + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-5, std::ios::end);
    f.write("\x13\x37", 2);
  }
  auto bad = Resume(all);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(fault::ExitCodeFor(bad.status()), fault::kExitBadConfig) << bad.status();
  EXPECT_NE(bad.status().message().find("step_00000004"), std::string::npos) << bad.status();
}

// Two data-parallel ranks whose run directories disagree (rank 1 cannot
// read the newest checkpoint, so it would resume 4 steps earlier): both stop
// before training instead of running out of step.
TEST(ResumeThroughRunTraining, RanksResumingFromDifferentStepsStop) {
  const std::string a = Interrupted("rank0_view");  // checkpoints 4 and 8; global batch 2
  const std::string b = TempDir("rank1_view");
  fs::copy(a + "/checkpoints", b + "/checkpoints", fs::copy_options::recursive);
  {
    std::fstream f(StepDir(b, 8) + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-5, std::ios::end);
    f.write("\x13\x37", 2);
  }
  engine::Config two = Small();
  two.parallel.dp = 2;
  two.training.micro_batch = 1;  // the same global batch of 2
  comm::FakeWorld world(2, std::chrono::seconds(30));
  std::vector<absl::Status> status(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      auto comm = world.Join(r);
      RunOptions o = Options(r == 0 ? a : b);
      o.resume = true;
      o.rank = r;
      o.world_size = 2;
      o.communicator = comm.get();
      status[r] = RunTraining(two, o).status();
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(status[r].code(), absl::StatusCode::kFailedPrecondition) << "rank " << r << ": " << status[r];
    EXPECT_NE(status[r].message().find("different steps (4 to 8"), std::string::npos) << status[r];
  }
}

TEST(ResumeThroughRunTraining, FailedCheckpointWriteDoesNotStopTraining) {
  const std::string dir = TempDir("write_fails");
  // The save of step 4 cannot create its staging directory (a file is in
  // the way): every attempt fails; training goes on and step 8 is saved.
  fs::create_directories(dir + "/checkpoints");
  std::ofstream(dir + "/checkpoints/.staging.step_00000004") << "in the way";
  auto r = RunTraining(Small(), Options(dir));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->next_step, 12);
  EXPECT_FALSE(fs::exists(StepDir(dir, 4)));
  EXPECT_TRUE(fs::exists(StepDir(dir, 8)));
  EXPECT_TRUE(fs::exists(StepDir(dir, 12)));
}

}  // namespace
}  // namespace kp::worker
