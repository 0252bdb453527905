// The loop on a tiny model with in-memory batches: loss decreases; a run
// stopped and resumed from its saved state (an in-memory round trip of model
// and optimizer tensors) is bitwise equal to the uninterrupted run; the NaN
// policy skips or stops and never saves a non-finite state.
#include "runtime/engine/train_loop.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

namespace kp::engine {
namespace {

Config TinyConfig(int64_t steps) {
  Config c;
  c.model.vocab_size = 16;
  c.model.d_model = 32;
  c.model.n_layers = 2;
  c.model.n_heads = 4;
  c.model.n_kv_heads = 2;
  c.model.ffn_hidden = 64;
  c.model.max_seq_len = 32;
  c.training.seq_len = 32;
  c.training.micro_batch = 4;
  c.training.grad_accum = 2;
  c.training.steps = steps;
  c.training.lr = 1e-2;
  c.training.min_lr = 1e-3;
  c.training.warmup_steps = std::min<int64_t>(3, steps);
  c.training.loss_chunk_tokens = 40;
  c.training.checkpoint_every = 0;
  c.training.log_every = 1000;
  c.data.builtin.num_symbols = 8;
  c.data.builtin.num_keys = 4;
  absl::Status valid = ValidateConfig(c);
  EXPECT_TRUE(valid.ok()) << valid;
  return c;
}

// Sequences with structure to learn: x[i+1] = (x[i] + stride) mod V, stride
// and start drawn from (step, micro, row). A pure function of its arguments.
class CountingBatches final : public BatchSource {
 public:
  explicit CountingBatches(const Config& c) : c_(c) {}
  absl::StatusOr<at::Tensor> Batch(int64_t step, int micro) override {
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(1000 * step + micro);
    const int64_t b = c_.training.micro_batch, t = c_.training.seq_len + 1;
    const int64_t v = c_.model.vocab_size;
    at::Tensor start = at::randint(v, {b, 1}, g, at::kLong);
    at::Tensor stride = at::randint(1, 4, {b, 1}, g, at::kLong);
    return (start + stride * at::arange(t, at::kLong).unsqueeze(0)).remainder(v);
  }

 private:
  Config c_;
};

class NullMetrics final : public MetricsSink {
 public:
  void OnStep(const StepMetrics& m) override { steps.push_back(m); }
  std::vector<StepMetrics> steps;
};

// Keeps copies of the model and optimizer tensors of every save.
class MemoryCheckpoints final : public CheckpointSink {
 public:
  absl::Status Save(int64_t next_step, Transformer& model, Optimizer& optimizer) override {
    std::map<std::string, at::Tensor> s;
    for (const auto& p : model.named_parameters()) s["model." + p.key()] = p.value().detach().clone();
    for (const auto& [k, v] : optimizer.StateDict()) s["optim." + k] = v.clone();
    for (const auto& [k, v] : s) {
      if (v.is_floating_point()) {
        EXPECT_TRUE(v.isfinite().all().item<bool>()) << k;
      }
    }
    saves[next_step] = std::move(s);
    return absl::OkStatus();
  }
  std::map<int64_t, std::map<std::string, at::Tensor>> saves;
};

// Poisons one gradient with NaN on chosen steps (as a bad batch would).
class NanAtSteps final : public GradientSync {
 public:
  NanAtSteps(std::vector<at::Tensor> params, std::set<int> bad) : params_(params), bad_(bad) {}
  absl::Status Finish() override {
    if (bad_.count(calls_++)) params_[0].mutable_grad().fill_(NAN);
    return absl::OkStatus();
  }

 private:
  std::vector<at::Tensor> params_;
  std::set<int> bad_;
  int calls_ = 0;
};

struct TrainRun {
  std::unique_ptr<LinearFactory> factory = MakeDenseLinearFactory();
  std::shared_ptr<Transformer> model;
  std::unique_ptr<Optimizer> optimizer;
  explicit TrainRun(const Config& c) {
    // One intra-op thread: OpenMP's spinning threads slow tiny ops 10x on a
    // busy 2-core machine, and the results do not depend on it.
    at::set_num_threads(1);
    LinearContext ctx;
    ctx.generator = at::make_generator<at::CPUGeneratorImpl>(c.training.seed);
    model = std::make_shared<Transformer>(c.model, *factory, ctx, MakeLocalAttention(),
                                          c.training.activation_checkpointing);
    optimizer = std::make_unique<Optimizer>(*model, c.training);
  }
  absl::StatusOr<TrainResult> Train(const Config& c, int64_t from, int64_t to,
                                    CheckpointSink* ckpt = nullptr, GradientSync* sync = nullptr) {
    CountingBatches data(c);
    GradientSync none;
    NullMetrics metrics;
    TrainLoopOptions o;
    o.start_step = from;
    o.end_step = to;
    return TrainLoop(c, *model, *optimizer, data, sync ? *sync : none, ckpt, metrics, o);
  }
};

TEST(TrainLoopTest, LossDecreases) {
  Config c = TinyConfig(30);
  TrainRun run(c);
  auto r = run.Train(c, 0, 30);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->losses.size(), 30u);
  const double first = r->losses.front();
  EXPECT_NEAR(first, std::log(16.0), 0.3);  // starts near uniform over V
  EXPECT_LT(r->final_loss, 0.5 * first);
  EXPECT_EQ(r->skipped_steps, 0);
}

TEST(TrainLoopTest, ResumeEqualsUninterruptedBitwise) {
  Config c = TinyConfig(12);
  c.training.activation_checkpointing = ActivationCheckpointing::kSelective;
  TrainRun straight(c);
  ASSERT_TRUE(straight.Train(c, 0, 12).ok());

  MemoryCheckpoints ckpt;
  {
    TrainRun first(c);
    ASSERT_TRUE(first.Train(c, 0, 5, &ckpt).ok());
  }
  ASSERT_EQ(ckpt.saves.count(5), 1u);
  const auto& saved = ckpt.saves[5];
  TrainRun resumed(c);  // fresh weights from the seed, then overwritten
  {
    at::NoGradGuard no_grad;
    for (auto& p : resumed.model->named_parameters()) p.value().copy_(saved.at("model." + p.key()));
  }
  std::map<std::string, at::Tensor> optim;
  for (const auto& [k, v] : saved) {
    if (k.rfind("optim.", 0) == 0) optim[k.substr(6)] = v;
  }
  ASSERT_FALSE(optim.empty());
  ASSERT_TRUE(resumed.optimizer->LoadStateDict(optim).ok());
  ASSERT_TRUE(resumed.Train(c, 5, 12).ok());

  auto a = straight.model->named_parameters();
  auto b = resumed.model->named_parameters();
  for (const auto& p : a) {
    EXPECT_TRUE(at::equal(p.value(), b[p.key()])) << p.key();
  }
  auto sa = straight.optimizer->StateDict();
  auto sb = resumed.optimizer->StateDict();
  ASSERT_EQ(sa.size(), sb.size());
  for (const auto& [k, v] : sa) EXPECT_TRUE(at::equal(v, sb.at(k))) << k;
}

TEST(TrainLoopTest, NanStepIsSkipped) {
  Config c = TinyConfig(6);
  TrainRun run(c);
  NanAtSteps sync(run.optimizer->parameters(), {2});
  MemoryCheckpoints ckpt;
  c.training.checkpoint_every = 1;
  std::map<std::string, at::Tensor> before;
  auto r = run.Train(c, 0, 6, &ckpt, &sync);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->skipped_steps, 1);
  EXPECT_TRUE(std::isnan(r->losses[2]));
  // The skipped step left the weights exactly as the previous step did.
  for (const auto& [k, v] : ckpt.saves.at(2)) {
    if (k.rfind("model.", 0) == 0) {
      EXPECT_TRUE(at::equal(v, ckpt.saves.at(3).at(k))) << k;
    }
  }
  for (const auto& p : run.model->parameters()) EXPECT_TRUE(p.isfinite().all().item<bool>());
}

TEST(TrainLoopTest, NanStopsWithoutSaving) {
  Config c = TinyConfig(6);
  c.training.nan_policy = NanPolicy::kStop;
  c.training.checkpoint_every = 1;
  TrainRun run(c);
  NanAtSteps sync(run.optimizer->parameters(), {3});
  MemoryCheckpoints ckpt;
  auto r = run.Train(c, 0, 6, &ckpt, &sync);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("step 3"), std::string::npos) << r.status();
  EXPECT_EQ(ckpt.saves.size(), 3u);  // after steps 0, 1, 2 only
  EXPECT_EQ(ckpt.saves.rbegin()->first, 3);
}

TEST(TrainLoopTest, BadBatchShapeIsAnError) {
  Config c = TinyConfig(2);
  TrainRun run(c);
  Config wrong = c;
  wrong.training.seq_len = 16;  // the source makes 17-token rows, the loop wants 33
  CountingBatches data(wrong);
  GradientSync none;
  NullMetrics metrics;
  TrainLoopOptions o;
  o.end_step = 2;
  auto r = TrainLoop(c, *run.model, *run.optimizer, data, none, nullptr, metrics, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("training.seq_len"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace kp::engine
