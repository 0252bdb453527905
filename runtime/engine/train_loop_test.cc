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

namespace kp::engine {
namespace {

// Batches cut from a fixed stream of samples (sample g a pure function of g),
// so a step's global batch is the same however it is split into micro-steps.
class SampleStream final : public BatchSource {
 public:
  explicit SampleStream(const Config& c) : c_(c), micro_batch_(c.training.micro_batch) {}
  absl::StatusOr<at::Tensor> Batch(int64_t step, int micro) override {
    const int64_t global = c_.training.micro_batch * c_.training.grad_accum;
    std::vector<at::Tensor> rows;
    for (int64_t i = 0; i < micro_batch_; ++i) {
      const int64_t g = step * global + micro * micro_batch_ + i;
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7919 * g + 1);
      const int64_t t = c_.training.seq_len + 1, v = c_.model.vocab_size;
      at::Tensor start = at::randint(v, {1, 1}, gen, at::kLong);
      at::Tensor stride = at::randint(1, 4, {1, 1}, gen, at::kLong);
      rows.push_back((start + stride * at::arange(t, at::kLong).unsqueeze(0)).remainder(v));
    }
    return at::cat(rows);
  }
  void set_micro_batch(int64_t b) { micro_batch_ = b; }

 private:
  Config c_;
  int64_t micro_batch_;
};

// Fails the sync of one step once, after its backward has run (as a dead
// peer would), with the given code.
class FailOnce final : public GradientSync {
 public:
  FailOnce(int64_t step, absl::StatusCode code) : step_(step), code_(code) {}
  void PrepareForBackward(bool) override {}
  absl::Status Finish() override {
    if (calls_++ == step_) return absl::Status(code_, "peer died (test)");
    return absl::OkStatus();
  }

 private:
  int64_t step_;
  absl::StatusCode code_;
  int64_t calls_ = 0;
};

// Re-splits the global batch into twice as many micro-steps of half the size.
class HalveMicroBatch final : public DpRecovery {
 public:
  explicit HalveMicroBatch(SampleStream* data) : data_(data) {}
  absl::StatusOr<DpLayout> Recover(int64_t step, const absl::Status& error) override {
    if (!absl::IsUnavailable(error)) return error;
    steps.push_back(step);
    DpLayout l;
    l.micro_batch = 2;
    l.grad_accum = 4;
    data_->set_micro_batch(2);
    return l;
  }
  std::vector<int64_t> steps;

 private:
  SampleStream* data_;
};

absl::StatusOr<TrainResult> TrainOn(TrainRun& run, const Config& c, BatchSource& data,
                                    GradientSync& sync, DpRecovery* recovery) {
  NullMetrics metrics;
  TrainLoopOptions o;
  o.end_step = c.training.steps;
  o.recovery = recovery;
  return TrainLoop(c, *run.model, *run.optimizer, data, sync, nullptr, metrics, o);
}

// The run that never fails, for the recovered runs to match: the same
// samples per step; only the float summation order changes.
struct StraightRun {
  explicit StraightRun(const Config& c) : run(c), data(c) {
    GradientSync none;
    result = TrainOn(run, c, data, none, nullptr);
  }
  // The recovered run's per-step losses and final weights match, 1e-5.
  void ExpectMatches(const TrainResult& got, TrainRun& recovered) const {
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(got.losses.size(), result->losses.size());
    for (size_t s = 0; s < got.losses.size(); ++s) {
      EXPECT_NEAR(result->losses[s], got.losses[s], 1e-5) << "step " << s;
    }
    auto want = run.model->named_parameters();
    for (const auto& p : recovered.model->named_parameters()) {
      EXPECT_LT((p.value() - want[p.key()]).abs().max().item<double>(), 1e-5) << p.key();
    }
  }
  TrainRun run;
  SampleStream data;
  absl::StatusOr<TrainResult> result;
};

// A step whose sync failed is redone with the recovered layout from the
// state the rank still holds: the result matches the run that never failed.
TEST(TrainLoopRecoveryTest, FailedStepIsRedoneWithTheNewLayout) {
  Config c = TinyConfig(6);
  StraightRun straight(c);

  TrainRun recovered(c);
  SampleStream data(c);
  FailOnce sync(/*step=*/3, absl::StatusCode::kUnavailable);
  HalveMicroBatch recovery(&data);
  auto b = TrainOn(recovered, c, data, sync, &recovery);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(recovery.steps, std::vector<int64_t>{3});
  EXPECT_EQ(b->recoveries, 1);
  ASSERT_EQ(b->losses.size(), 6u);
  straight.ExpectMatches(*b, recovered);
}

// A peer that dies after the gradient sync, during the step's loss
// agreement, fails the step the same way: it is redone after recovery, not
// the end of the run (the in-process shrink test once hit exactly this).
TEST(TrainLoopRecoveryTest, FailedLossAgreementIsRecoveredLikeAFailedSync) {
  Config c = TinyConfig(5);
  StraightRun straight(c);

  TrainRun recovered(c);
  SampleStream data(c);
  HalveMicroBatch recovery(&data);
  NullMetrics metrics;
  TrainLoopOptions o;
  o.end_step = c.training.steps;
  o.recovery = &recovery;
  int calls = 0;
  o.mean_loss_across_ranks = [&calls](double loss) -> absl::StatusOr<double> {
    if (calls++ == 2) return absl::UnavailableError("peer died in the loss all-reduce (test)");
    return loss;
  };
  GradientSync none;
  auto b = TrainLoop(c, *recovered.model, *recovered.optimizer, data, none, nullptr, metrics, o);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(recovery.steps, std::vector<int64_t>{2});
  EXPECT_EQ(b->recoveries, 1);
  ASSERT_EQ(b->losses.size(), 5u);
  straight.ExpectMatches(*b, recovered);
}

TEST(TrainLoopRecoveryTest, UnrecoveredErrorEndsTheRun) {
  Config c = TinyConfig(4);
  TrainRun run(c);
  SampleStream data(c);
  FailOnce sync(/*step=*/1, absl::StatusCode::kInternal);
  HalveMicroBatch recovery(&data);
  auto r = TrainOn(run, c, data, sync, &recovery);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(recovery.steps.empty());
}

}  // namespace
}  // namespace kp::engine
