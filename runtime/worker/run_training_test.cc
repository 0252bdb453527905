// RunTraining end to end on CPU with the real data, checkpoint and
// data-parallel libraries: metrics lines, checkpoints, resume equal to an
// uninterrupted run (bitwise), two data-parallel ranks equal to one process
// with the same global batch, and bad input failing with a named cause.
#include "runtime/worker/run_training.h"

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "runtime/comm/fake_communicator.h"
#include "runtime/engine/checkpoint/checkpoint_manager.h"
#include "runtime/worker/run_training_test_util.h"

namespace kp::worker {
namespace {

namespace fs = std::filesystem;

std::string TempDir(const std::string& name) { return testing::FreshTempDir(name); }

engine::Config SmallTiny() { return testing::SmallTinyConfig(); }

RunOptions Options(const std::string& dir) { return testing::CpuRunOptions(dir); }

ckpt::TensorMap FinalModel(const std::string& run_dir) {
  auto latest = ckpt::CheckpointManager::LatestComplete(run_dir);
  EXPECT_TRUE(latest.ok()) << latest.status();
  auto loaded = ckpt::CheckpointManager::Load(*latest);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  return loaded->parts.at("model");
}

TEST(RunTrainingTest, WritesMetricsAndCheckpoints) {
  const std::string dir = TempDir("metrics");
  auto r = RunTraining(SmallTiny(), Options(dir));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->next_step, 8);
  EXPECT_GT(r->entropy_rate, 0.0);
  EXPECT_LT(r->losses.back(), r->losses.front());
  std::ifstream in(dir + "/metrics.jsonl");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    for (const char* k : {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu",
                          "peak_mem_bytes", "time_s"}) {
      EXPECT_TRUE(j.contains(k)) << k << " in " << line;
    }
    EXPECT_EQ(j["step"].get<int>(), n);
    ++n;
  }
  EXPECT_EQ(n, 8);
  auto state = ckpt::CheckpointManager::LoadState(*ckpt::CheckpointManager::LatestComplete(dir));
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->step, 8);
}

TEST(RunTrainingTest, ResumeEqualsUninterruptedBitwise) {
  engine::Config c = SmallTiny();
  c.training.activation_checkpointing = engine::ActivationCheckpointing::kFull;
  const std::string straight = TempDir("straight"), resumed = TempDir("resumed");
  ASSERT_TRUE(RunTraining(c, Options(straight)).ok());
  RunOptions first = Options(resumed);
  first.stop_after_steps = 5;  // a checkpoint lands at 4 (checkpoint_every) and at 5
  ASSERT_TRUE(RunTraining(c, first).ok());
  RunOptions second = Options(resumed);
  second.resume = true;
  auto r = RunTraining(c, second);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->losses.size(), 3u);  // steps 5, 6, 7
  ckpt::TensorMap a = FinalModel(straight), b = FinalModel(resumed);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(at::equal(t, b.at(name))) << name;
}

TEST(RunTrainingTest, TwoDataParallelRanksEqualOneProcess) {
  engine::Config one = SmallTiny();
  one.training.steps = 4;
  one.training.checkpoint_every = 0;
  one.training.micro_batch = 4;  // global batch 4 x 2 micro-steps = 8
  engine::Config two = one;
  two.parallel.dp = 2;
  two.training.micro_batch = 2;  // 2 ranks x 2 x 2 micro-steps = 8
  const std::string single = TempDir("dp1"), dual = TempDir("dp2");
  ASSERT_TRUE(RunTraining(one, Options(single)).ok());

  comm::FakeWorld world(2, std::chrono::seconds(60));
  std::vector<absl::Status> status(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      auto comm = world.Join(r);
      RunOptions o = Options(dual);
      o.rank = r;
      o.world_size = 2;
      o.communicator = comm.get();
      auto result = RunTraining(two, o);
      status[r] = result.status();
    });
  }
  for (auto& t : ranks) t.join();
  ASSERT_TRUE(status[0].ok()) << status[0];
  ASSERT_TRUE(status[1].ok()) << status[1];
  // Same samples, same global batch; only the summation order of the
  // gradient differs (two half-batches averaged vs one), so float tolerance.
  ckpt::TensorMap a = FinalModel(single), b = FinalModel(dual);
  for (const auto& [name, t] : a) {
    double err = (t - b.at(name)).abs().max().item<double>();
    EXPECT_LT(err, 1e-4) << name;
  }
}

// Runs `config` on `world` in-process ranks (threads over the fake backend)
// into run_dir; returns each rank's status (and, with `results`, each rank's
// TrainResult where it finished).
std::vector<absl::Status> RunRanks(const engine::Config& config, int world_size,
                                   const std::string& run_dir,
                                   const std::function<void(RunOptions&)>& adjust = {},
                                   std::vector<engine::TrainResult>* results = nullptr) {
  if (results != nullptr) results->assign(world_size, engine::TrainResult{});
  comm::FakeWorld world(world_size, std::chrono::seconds(60));
  std::vector<absl::Status> status(world_size);
  std::vector<std::thread> ranks;
  for (int r = 0; r < world_size; ++r) {
    ranks.emplace_back([&, r] {
      auto comm = world.Join(r);
      RunOptions o = Options(run_dir);
      o.rank = r;
      o.world_size = world_size;
      o.communicator = comm.get();
      if (adjust) adjust(o);
      auto result = RunTraining(config, o);
      status[r] = result.status();
      if (result.ok() && results != nullptr) (*results)[r] = *result;
    });
  }
  for (auto& t : ranks) t.join();
  return status;
}

TEST(RunTrainingTest, ContextParallelEqualsWholeSequence) {
  engine::Config whole = SmallTiny();
  whole.training.steps = 3;
  whole.training.checkpoint_every = 0;
  engine::Config sharded = whole;
  sharded.parallel.cp = 2;  // seq 32 = 4 zigzag chunks of 8
  // Recomputation repeats the ring exchange in backward: checked here too.
  sharded.training.activation_checkpointing = engine::ActivationCheckpointing::kFull;
  const std::string single = TempDir("cp1"), dual = TempDir("cp2");
  auto one = RunTraining(whole, Options(single));
  ASSERT_TRUE(one.ok()) << one.status();
  std::vector<engine::TrainResult> two;
  for (const absl::Status& s : RunRanks(sharded, 2, dual, {}, &two)) ASSERT_TRUE(s.ok()) << s;
  // Each rank reports the loss of the whole sequence (its shard's loss
  // averaged with the other's), not the loss of its own half.
  ASSERT_EQ(one->losses.size(), 3u);
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(two[r].losses.size(), 3u);
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(two[r].losses[i], one->losses[i], 1e-5) << "rank " << r << " step " << i;
  }
  // Same tokens and the same global loss; attention merged across ranks in
  // float32 and gradients summed in another order: float tolerance.
  ckpt::TensorMap a = FinalModel(single), b = FinalModel(dual);
  for (const auto& [name, t] : a) {
    double err = (t - b.at(name)).abs().max().item<double>();
    EXPECT_LT(err, 1e-4) << name;
  }
}

TEST(RunTrainingTest, ContextParallelJobRefusesToStartWhenParityFails) {
  engine::Config c = SmallTiny();
  c.training.steps = 2;
  c.parallel.cp = 2;
  c.parallel.cp_mode = engine::CpMode::kRing;
  const std::string dir = TempDir("cp_parity");
  const auto status = RunRanks(c, 2, dir, [](RunOptions& o) { o.break_cp_merge_for_test = true; });
  for (const absl::Status& s : status) {
    // Every rank refuses, before any step, naming the check and the mode.
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;  // exit 2: no restart
    EXPECT_NE(s.message().find("parity check failed"), std::string::npos) << s;
    EXPECT_NE(s.message().find("mode ring"), std::string::npos) << s;
  }
  const std::string ckpts = dir + "/checkpoints";
  EXPECT_TRUE(!std::filesystem::exists(ckpts) || std::filesystem::is_empty(ckpts)) << "trained anyway";
}

TEST(RunTrainingTest, BadInputNamesTheCause) {
  engine::Config c = SmallTiny();
  c.data.corpus = engine::DataConfig::Corpus::kPath;
  c.data.path = "/nonexistent/corpus.tok";
  auto r = RunTraining(c, Options(TempDir("bad1")));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/nonexistent/corpus.tok"), std::string::npos) << r.status();

  // Byte-level text needs vocab 256; a 128-token model cannot embed it.
  const std::string dir = TempDir("bad2");
  std::ofstream(dir + "/text.txt") << std::string(4096, 'z') << "\xff";
  c.data.path = dir + "/text.txt";
  c.model.vocab_size = 128;
  c.data.builtin.num_symbols = 32;
  r = RunTraining(c, Options(dir));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("vocab"), std::string::npos) << r.status();

  // A checkpoint of another shape does not load into this model.
  engine::Config small = SmallTiny();
  small.training.steps = 2;
  const std::string run = TempDir("bad3");
  ASSERT_TRUE(RunTraining(small, Options(run)).ok());
  engine::Config wider = small;
  wider.model.ffn_hidden = 96;
  RunOptions o = Options(run);
  o.resume = true;
  r = RunTraining(wider, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("model"), std::string::npos) << r.status();

  // FP8 on a CPU: the FP8 Linear refuses with its reason instead of
  // silently training in another precision.
  engine::Config fp8 = SmallTiny();
  fp8.precision = engine::Precision::kFp8;
  r = RunTraining(fp8, Options(TempDir("bad5")));
  ASSERT_FALSE(r.ok());
  // Permanent (exit 2): a restart on the same device cannot fix it.
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_NE(absl::AsciiStrToLower(r.status().message()).find("fp8"), std::string::npos)
      << r.status();

  // A typo in the config's fp8 section names the field before anything runs.
  engine::Config fp8_typo = SmallTiny();
  fp8_typo.precision = engine::Precision::kFp8;
  fp8_typo.fp8_yaml = "recipe: delayed\namax_hisotry_len: 8\n";
  r = RunTraining(fp8_typo, Options(TempDir("bad6")));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("amax_hisotry_len"), std::string::npos) << r.status();

  engine::Config bad_dp = SmallTiny();
  bad_dp.parallel.dp = 2;
  r = RunTraining(bad_dp, Options(TempDir("bad4")));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("parallel.dp * parallel.cp"), std::string::npos)
      << r.status();
}

}  // namespace
}  // namespace kp::worker
