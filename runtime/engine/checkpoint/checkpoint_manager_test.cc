#include "runtime/engine/checkpoint/checkpoint_manager.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "runtime/common/files.h"

namespace kp::ckpt {
namespace {

namespace fs = std::filesystem;

std::string RunDir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = (fs::path(tmp ? tmp : "/tmp") /
                           ::testing::UnitTest::GetInstance()->current_test_info()->name())
                              .string();
  fs::remove_all(dir);
  return dir;
}

std::map<std::string, TensorMap> Parts(int seed) {
  at::manual_seed(seed);
  return {{"model", {{"w", at::randn({16, 8})}, {"b", at::randn({8}).to(at::kBFloat16)}}},
          {"optimizer", {{"w.exp_avg", at::randn({16, 8})}, {"step", at::randint(1, 100, {1}, at::kLong)}}}};
}

CheckpointState State(int64_t step) {
  CheckpointState s;
  s.step = step;
  s.data_position = step * 32;
  s.config_hash = "cfg-abc";
  s.rng = {{"cpu", std::string("\x00\x01\xff\x7f binary", 12)}};
  s.extra = {{"loss", "2.5"}};
  return s;
}

void ExpectSameParts(const std::map<std::string, TensorMap>& a, const std::map<std::string, TensorMap>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [part, tensors] : a) {
    ASSERT_TRUE(b.count(part)) << part;
    ASSERT_EQ(tensors.size(), b.at(part).size());
    for (const auto& [name, t] : tensors) {
      ASSERT_TRUE(b.at(part).count(name)) << part << "/" << name;
      EXPECT_TRUE(at::equal(t, b.at(part).at(name))) << part << "/" << name;
    }
  }
}

TEST(Checkpoint, AsyncSaveThenLoadEqualsOriginal) {
  const std::string run = RunDir();
  auto parts = Parts(1);
  std::map<std::string, TensorMap> original;
  for (const auto& [p, ts] : parts) {
    for (const auto& [n, t] : ts) original[p][n] = t.clone();
  }
  {
    CheckpointManager m({.run_dir = run});
    ASSERT_TRUE(m.SaveAsync(State(7), parts).ok());
    // The training loop moves on at once: the checkpoint must hold the snapshot.
    for (auto& [p, ts] : parts) {
      for (auto& [n, t] : ts) t.add_(1);
    }
    ASSERT_TRUE(m.Wait().ok());
  }
  auto dir = CheckpointManager::LatestComplete(run);
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(fs::path(*dir).filename(), "step_00000007");
  auto loaded = CheckpointManager::Load(*dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameParts(original, loaded->parts);
  EXPECT_EQ(loaded->state.step, 7);
  EXPECT_EQ(loaded->state.data_position, 7 * 32);
  EXPECT_EQ(loaded->state.config_hash, "cfg-abc");
  EXPECT_EQ(loaded->state.rng.at("cpu"), State(7).rng.at("cpu"));
  EXPECT_EQ(loaded->state.extra.at("loss"), "2.5");
  EXPECT_EQ(*ReadFile(CheckpointManager::CheckpointsDir(run) + "/LATEST"), "step_00000007\n");
  auto only_model = CheckpointManager::Load(*dir, {"model"});
  ASSERT_TRUE(only_model.ok());
  EXPECT_EQ(only_model->parts.size(), 1u);
}

TEST(Checkpoint, KeepsTheLastK) {
  const std::string run = RunDir();
  CheckpointManager m({.run_dir = run, .keep_last = 3});
  for (int step = 1; step <= 6; ++step) ASSERT_TRUE(m.SaveAsync(State(step * 10), Parts(step)).ok());
  ASSERT_TRUE(m.Wait().ok());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(CheckpointManager::CheckpointsDir(run))) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"LATEST", "step_00000040", "step_00000050", "step_00000060"}));
  auto loaded = CheckpointManager::Load(*CheckpointManager::LatestComplete(run));
  ASSERT_TRUE(loaded.ok());
  ExpectSameParts(Parts(6), loaded->parts);
}

TEST(Checkpoint, CrashLeftoversAreIgnored) {
  const std::string run = RunDir();
  {
    CheckpointManager m({.run_dir = run, .keep_last = 10});
    ASSERT_TRUE(m.Save(State(1), Parts(1)).ok());
    ASSERT_TRUE(m.Save(State(2), Parts(2)).ok());
    ASSERT_TRUE(m.Save(State(3), Parts(3)).ok());
  }
  const std::string ck = CheckpointManager::CheckpointsDir(run);
  // A crash before commit: parts in a staging directory, no state.json.
  {
    CheckpointManager writer({.run_dir = run, .commit = false});
    ASSERT_TRUE(writer.Save(State(5), Parts(5)).ok());
  }
  ASSERT_TRUE(fs::exists(ck + "/.staging.step_00000005/model.safetensors"));
  // A step directory without state.json (never written by us, but a copy
  // tool could leave one), and one whose part is truncated.
  fs::create_directories(ck + "/step_00000004");
  fs::copy_file(ck + "/step_00000003/model.safetensors", ck + "/step_00000004/model.safetensors");
  fs::resize_file(ck + "/step_00000003/optimizer.safetensors",
                  fs::file_size(ck + "/step_00000003/optimizer.safetensors") - 3);
  auto latest = CheckpointManager::LatestComplete(run);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(fs::path(*latest).filename(), "step_00000002");
  auto loaded = CheckpointManager::Load(*latest);
  ASSERT_TRUE(loaded.ok());
  ExpectSameParts(Parts(2), loaded->parts);
  // Loading the truncated one fails and names the file.
  auto bad = CheckpointManager::Load(ck + "/step_00000003");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("optimizer.safetensors"), std::string::npos) << bad.status();
}

TEST(Checkpoint, MissingPartFailsLoadClearly) {
  const std::string run = RunDir();
  CheckpointManager m({.run_dir = run});
  ASSERT_TRUE(m.Save(State(3), Parts(3)).ok());
  const std::string dir = CheckpointManager::CheckpointsDir(run) + "/step_00000003";
  fs::remove(dir + "/optimizer.safetensors");
  auto loaded = CheckpointManager::Load(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find("'optimizer' is missing"), std::string::npos) << loaded.status();
  EXPECT_EQ(CheckpointManager::LatestComplete(run).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(CheckpointManager::Load(dir, {"nope"}).status().code(), absl::StatusCode::kNotFound);
}

TEST(Checkpoint, ShardedPartsFromSeveralRanks) {
  const std::string run = RunDir();
  at::manual_seed(3);
  const TensorMap shard0 = {{"m", at::randn({4})}}, shard1 = {{"m", at::randn({4})}};
  const TensorMap model = {{"w", at::randn({3, 3})}};
  CheckpointState st = State(12);
  st.part_names = {"model", "optimizer.rank00000", "optimizer.rank00001"};
  CheckpointManager rank0({.run_dir = run});
  CheckpointManager rank1({.run_dir = run, .commit = false});
  ASSERT_TRUE(rank0.SaveAsync(st, {{"model", model}, {"optimizer.rank00000", shard0}}).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(CheckpointManager::LatestComplete(run).ok());  // rank 1 has not written yet
  ASSERT_TRUE(rank1.SaveAsync(st, {{"optimizer.rank00001", shard1}}).ok());
  ASSERT_TRUE(rank1.Wait().ok());
  ASSERT_TRUE(rank0.Wait().ok());
  auto loaded = CheckpointManager::Load(*CheckpointManager::LatestComplete(run), {"optimizer.rank00001"});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(at::equal(loaded->parts.at("optimizer.rank00001").at("m"), shard1.at("m")));
}

TEST(Checkpoint, PartsOfACrashedAttemptAreNotTaken) {
  const std::string run = RunDir();
  CheckpointState st = State(20);
  st.part_names = {"model", "optimizer.rank00001"};
  const TensorMap stale = {{"m", at::zeros({2})}}, fresh = {{"m", at::ones({2})}};
  st.save_id = "attempt-1";
  {
    CheckpointManager rank1({.run_dir = run, .commit = false});
    ASSERT_TRUE(rank1.Save(st, {{"optimizer.rank00001", stale}}).ok());  // then the job died
  }
  st.save_id = "attempt-2";
  CheckpointManager rank0({.run_dir = run, .commit_timeout = std::chrono::milliseconds(300)});
  ASSERT_TRUE(rank0.SaveAsync(st, {{"model", Parts(1).at("model")}}).ok());
  EXPECT_EQ(rank0.Wait().code(), absl::StatusCode::kDeadlineExceeded);
  CheckpointManager rank0b({.run_dir = run, .commit_timeout = std::chrono::seconds(20)});
  ASSERT_TRUE(rank0b.SaveAsync(st, {{"model", Parts(1).at("model")}}).ok());
  CheckpointManager rank1({.run_dir = run, .commit = false});
  ASSERT_TRUE(rank1.Save(st, {{"optimizer.rank00001", fresh}}).ok());
  ASSERT_TRUE(rank0b.Wait().ok());
  auto loaded = CheckpointManager::Load(*CheckpointManager::LatestComplete(run));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(at::equal(loaded->parts.at("optimizer.rank00001").at("m"), fresh.at("m")));
  EXPECT_EQ(loaded->state.save_id, "attempt-2");
}

TEST(Checkpoint, MissingRankTimesOutAndCommitsNothing) {
  const std::string run = RunDir();
  CheckpointState st = State(4);
  st.part_names = {"model", "optimizer.rank00001"};
  CheckpointManager m({.run_dir = run, .commit_timeout = std::chrono::milliseconds(200)});
  ASSERT_TRUE(m.SaveAsync(st, {{"model", Parts(1).at("model")}}).ok());
  absl::Status s = m.Wait();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(s.message().find("optimizer.rank00001"), std::string::npos) << s;
  EXPECT_FALSE(fs::exists(CheckpointManager::CheckpointsDir(run) + "/step_00000004"));
}

TEST(Checkpoint, BackgroundErrorSurfacesOnTheNextCall) {
  const std::string run = RunDir();
  fs::create_directories(run);
  std::ofstream(run + "/checkpoints") << "a file where the directory should be";
  CheckpointManager m({.run_dir = run});
  ASSERT_TRUE(m.SaveAsync(State(1), Parts(1)).ok());  // fails in the background
  absl::Status next = m.SaveAsync(State(2), Parts(2));
  EXPECT_FALSE(next.ok());
  EXPECT_NE(next.message().find("checkpoints"), std::string::npos) << next;
  EXPECT_TRUE(m.Wait().ok());  // reported once; the second save was not started
}

TEST(Checkpoint, SavingAStepAgainReplacesIt) {
  const std::string run = RunDir();
  CheckpointManager m({.run_dir = run});
  ASSERT_TRUE(m.Save(State(9), Parts(1)).ok());
  ASSERT_TRUE(m.Save(State(9), Parts(2)).ok());
  auto loaded = CheckpointManager::Load(*CheckpointManager::LatestComplete(run));
  ASSERT_TRUE(loaded.ok());
  ExpectSameParts(Parts(2), loaded->parts);
  EXPECT_FALSE(fs::exists(CheckpointManager::CheckpointsDir(run) + "/.staging.step_00000009"));
}

TEST(Checkpoint, BadPartName) {
  CheckpointManager m({.run_dir = RunDir()});
  EXPECT_EQ(m.SaveAsync(State(1), {{"../evil", {}}}).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kp::ckpt

namespace kp::ckpt {
namespace {

TEST(Checkpoint, CaptureTakesHostCopiesAndWritesNothing) {
  const std::string run = RunDir();
  auto parts = Parts(7);
  std::map<std::string, TensorMap> original;
  for (const auto& [p, ts] : parts) {
    for (const auto& [n, t] : ts) original[p][n] = t.clone();
  }
  CheckpointState got_state;
  std::map<std::string, TensorMap> got;
  CheckpointOptions o;
  o.run_dir = run;
  o.capture = [&](const CheckpointState& s, std::map<std::string, TensorMap> p) {
    got_state = s;
    got = std::move(p);
    return absl::OkStatus();
  };
  CheckpointManager m(o);
  ASSERT_TRUE(m.SaveAsync(State(12), parts).ok());
  parts["model"]["w"].add_(1.0);  // the caller trains on: the capture holds copies
  ExpectSameParts(got, original);
  EXPECT_EQ(got_state.step, 12);
  EXPECT_EQ(got_state.rng, State(12).rng);
  EXPECT_FALSE(fs::exists(CheckpointManager::CheckpointsDir(run)));
}

}  // namespace
}  // namespace kp::ckpt
