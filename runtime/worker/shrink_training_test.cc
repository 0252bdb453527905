// fault.in_process_shrink end to end: three data-parallel ranks (processes
// over Gloo, RunTraining as kp-train runs it); rank 2 is SIGKILLed at the
// start of step 4; ranks 0 and 1 re-form their group in-process, redo step 4
// with two ranks and finish. Against the same job run without the kill:
// - every step's global batch was consumed exactly once (the same samples);
// - the final weights agree within 1e-4 (the reduction order of step >= 4
//   changes: 2 x 3 micro-steps instead of 3 x 2), and so does the loss of
//   the final model on the next, unseen global batch (relative 1e-4).
// The parent never runs torch before fork(); the comparison of weights and
// losses runs in a child of its own.
#include <signal.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "runtime/comm/multiprocess.h"
#include "runtime/engine/attention.h"
#include "runtime/engine/checkpoint/checkpoint_manager.h"
#include "runtime/engine/config.h"
#include "runtime/engine/data/sampler.h"
#include "runtime/engine/data/training_data.h"
#include "runtime/engine/linear.h"
#include "runtime/engine/model.h"
#include "runtime/worker/run_training.h"

namespace kp::worker {
namespace {

namespace fs = std::filesystem;
constexpr int kWorld = 3;
constexpr int kSteps = 8;
constexpr int kDieAt = 4;
constexpr int64_t kGlobalBatch = 12;  // 3 ranks x 2 micro-steps x 2 samples

engine::Config JobConfig() {
  auto c = engine::LoadConfigFile("configs/tiny.yaml");
  EXPECT_TRUE(c.ok()) << c.status();
  engine::Config config = *c;
  config.model.d_model = 32;
  config.model.n_layers = 2;
  config.model.ffn_hidden = 64;
  config.model.max_seq_len = 32;
  config.training.seq_len = 32;
  config.training.micro_batch = 2;
  config.training.grad_accum = 2;
  config.training.steps = kSteps;
  config.training.warmup_steps = 2;
  config.training.checkpoint_every = 0;
  config.training.log_every = 100;
  config.parallel.dp = kWorld;
  config.data.builtin.num_tokens = 1 << 16;
  config.fault.in_process_shrink = true;
  config.fault.shrink_window_ms = 9000;  // > the 4 s communicator timeout
  config.fault.min_dp = 2;
  EXPECT_TRUE(engine::ValidateConfig(config).ok());
  return config;
}

struct Record {
  int64_t step, micro, first, count;
};

// Runs the job over three processes; `die` (or -1) is SIGKILLed as it asks
// for the first batch of step kDieAt. Each rank logs the samples it reads to
// <dir>/samples_<rank>.txt as it goes.
std::vector<absl::Status> RunJob(const std::string& dir, int die, int expect_recoveries,
                                 const engine::Config& config = JobConfig()) {
  fs::create_directories(dir);
  return comm::testing::RunProcesses(
      kWorld,
      [&](int rank) -> absl::Status {
        RunOptions o;
        o.run_dir = dir + "/run";
        o.device = "cpu";
        o.threads = 1;
        o.rank = rank;
        o.world_size = kWorld;
        o.rendezvous = dir + "/rdv";
        o.comm_timeout_ms = 4000;
        std::ofstream log(absl::StrCat(dir, "/samples_", rank, ".txt"));
        o.on_batch = [&](int64_t step, int micro, int64_t first, int64_t count) {
          if (rank == die && step == kDieAt && micro == 0) ::raise(SIGKILL);
          log << step << " " << micro << " " << first << " " << count << std::endl;
        };
        KP_ASSIGN_OR_RETURN(engine::TrainResult r, RunTraining(config, o));
        if (r.recoveries != expect_recoveries || r.next_step != kSteps) {
          return absl::InternalError(absl::StrCat("rank ", rank, ": ", r.recoveries,
                                                  " recoveries, next step ", r.next_step));
        }
        return absl::OkStatus();
      },
      std::chrono::seconds(55));
}

// Per step, the samples every rank consumed in the attempt that completed
// (a rank that asks for micro-step 0 of a step again drops what it read of
// that step before).
std::map<int64_t, std::multiset<int64_t>> Consumed(const std::string& dir) {
  std::map<int64_t, std::multiset<int64_t>> out;
  for (int r = 0; r < kWorld; ++r) {
    std::ifstream in(absl::StrCat(dir, "/samples_", r, ".txt"));
    std::map<int64_t, std::vector<Record>> mine;
    Record rec;
    while (in >> rec.step >> rec.micro >> rec.first >> rec.count) {
      if (rec.micro == 0) mine[rec.step].clear();
      mine[rec.step].push_back(rec);
    }
    for (auto& [step, recs] : mine) {
      for (const Record& x : recs) {
        for (int64_t g = x.first; g < x.first + x.count; ++g) out[step].insert(g);
      }
    }
  }
  return out;
}

void ExpectEveryStepConsumedOnce(const std::string& dir) {
  auto consumed = Consumed(dir);
  ASSERT_EQ(consumed.size(), static_cast<size_t>(kSteps)) << dir;
  for (int64_t s = 0; s < kSteps; ++s) {
    std::multiset<int64_t> want;
    for (int64_t g = s * kGlobalBatch; g < (s + 1) * kGlobalBatch; ++g) want.insert(g);
    EXPECT_EQ(consumed[s], want) << dir << ": step " << s;
  }
}

std::string CorpusFile(const std::string& run_dir) {
  for (const auto& e : fs::recursive_directory_iterator(run_dir + "/corpus")) {
    if (e.path().extension() == ".tok") return e.path().string();
  }
  return "";
}

// The final model of a run and its mean loss on the global batch of step
// kSteps (never trained on).
struct Final {
  ckpt::TensorMap weights;
  double next_batch_loss = 0;
};

absl::StatusOr<Final> LoadFinal(const std::string& run_dir) {
  at::set_num_threads(1);
  const engine::Config config = JobConfig();
  KP_ASSIGN_OR_RETURN(std::string latest, ckpt::CheckpointManager::LatestComplete(run_dir));
  KP_ASSIGN_OR_RETURN(ckpt::LoadedCheckpoint loaded, ckpt::CheckpointManager::Load(latest));
  if (loaded.state.step != kSteps) {
    return absl::InternalError(absl::StrCat(latest, " is of step ", loaded.state.step));
  }
  Final f;
  f.weights = loaded.parts.at("model");
  auto factory = engine::MakeDenseLinearFactory();
  engine::LinearContext ctx;
  ctx.generator = at::make_generator<at::CPUGeneratorImpl>(config.training.seed);
  engine::Transformer model(config.model, *factory, ctx, engine::MakeLocalAttention(),
                            config.training.activation_checkpointing);
  {
    at::NoGradGuard no_grad;
    for (auto& p : model.named_parameters()) p.value().copy_(f.weights.at(p.key()));
  }
  KP_ASSIGN_OR_RETURN(auto source, data::OpenTrainingData(CorpusFile(run_dir)));
  data::SamplerOptions so;
  so.seed = config.training.seed;
  so.seq_len = config.training.seq_len;
  so.global_batch = kGlobalBatch;
  KP_ASSIGN_OR_RETURN(auto sampler, data::Sampler::Create(source, so));
  KP_ASSIGN_OR_RETURN(at::Tensor batch, sampler->Samples(kSteps * kGlobalBatch, kGlobalBatch));
  const int64_t t = config.training.seq_len;
  at::NoGradGuard no_grad;
  f.next_batch_loss = model
                          .Loss(batch.narrow(1, 0, t), batch.narrow(1, 1, t),
                                engine::WholeSequenceContext(t, at::kCPU),
                                config.training.loss_chunk_tokens)
                          .item<double>();
  return f;
}

TEST(ShrinkTrainingTest, SurvivorsOfASigkillFinishWithTheUninterruptedResult) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string base = absl::StrCat(tmp ? tmp : "/tmp", "/shrink_training_", ::getpid());
  fs::remove_all(base);

  auto straight = RunJob(base + "/straight", /*die=*/-1, /*expect_recoveries=*/0);
  for (int r = 0; r < kWorld; ++r) ASSERT_TRUE(straight[r].ok()) << straight[r];
  auto killed = RunJob(base + "/killed", /*die=*/2, /*expect_recoveries=*/1);
  EXPECT_TRUE(killed[0].ok()) << killed[0];
  EXPECT_TRUE(killed[1].ok()) << killed[1];
  EXPECT_FALSE(killed[2].ok());  // SIGKILLed
  ASSERT_TRUE(killed[0].ok() && killed[1].ok());

  ExpectEveryStepConsumedOnce(base + "/straight");
  ExpectEveryStepConsumedOnce(base + "/killed");

  auto compared = comm::testing::RunProcesses(1, [&](int) -> absl::Status {
    KP_ASSIGN_OR_RETURN(Final a, LoadFinal(base + "/straight/run"));
    KP_ASSIGN_OR_RETURN(Final b, LoadFinal(base + "/killed/run"));
    std::ostringstream why;
    for (const auto& [name, w] : a.weights) {
      const double err = (w - b.weights.at(name)).abs().max().item<double>();
      if (!(err < 1e-4)) why << name << " differs by " << err << "; ";
    }
    const double rel = std::abs(a.next_batch_loss - b.next_batch_loss) / a.next_batch_loss;
    if (!(rel < 1e-4)) {
      why << "final loss " << a.next_batch_loss << " vs " << b.next_batch_loss << "; ";
    }
    // Not a vacuous comparison: training moved the weights off the start.
    if (!(a.next_batch_loss < std::log(256.0) - 0.5)) why << "the model did not train; ";
    return why.str().empty() ? absl::OkStatus() : absl::InternalError(why.str());
  });
  EXPECT_TRUE(compared[0].ok()) << compared[0];
}

// Survivors that may not go on (fault.min_dp 3 of 3) end the run with the
// communicator's own error code, naming why, so the restart path (exit 75)
// takes over as it does without the option.
TEST(ShrinkTrainingTest, RefusedShrinkKeepsTheRestartPath) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string base = absl::StrCat(tmp ? tmp : "/tmp", "/shrink_refused_", ::getpid());
  fs::remove_all(base);
  engine::Config config = JobConfig();
  config.fault.min_dp = kWorld;
  config.fault.shrink_window_ms = 5000;
  auto st = RunJob(base, /*die=*/2, /*expect_recoveries=*/0, config);
  for (int r : {0, 1}) {
    EXPECT_NE(st[r].message().find("DEADLINE_EXCEEDED"), std::string::npos) << st[r];
    EXPECT_NE(st[r].message().find("in-process shrink refused"), std::string::npos) << st[r];
    EXPECT_NE(st[r].message().find("timeout waiting for 3 survivors"), std::string::npos) << st[r];
  }
  EXPECT_FALSE(st[2].ok());
}

}  // namespace
}  // namespace kp::worker
