// Long-context memory savers on CPU: host-offloaded checkpoints give the
// same loss and gradients as checkpoints kept in the graph (bitwise: the
// host copy is exact and the recomputation identical), with the expected
// stash / prefetch / fetch schedule; the MLP in sequence tiles gives the
// gradients of the untiled MLP (float64); the config rejects bad values.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "runtime/engine/config.h"
#include "runtime/engine/model.h"
#include "runtime/engine/offload.h"
#include "runtime/engine/recompute.h"
#include "runtime/engine/test_util.h"
#include "runtime/engine/train_loop.h"

namespace kp::engine {
namespace {

using testing::RelErr;

ModelConfig SmallConfig() {
  ModelConfig c;
  c.vocab_size = 41;
  c.d_model = 32;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_hidden = 80;
  c.max_seq_len = 64;
  return c;
}

struct Built {
  std::unique_ptr<LinearFactory> factory;
  std::shared_ptr<Transformer> model;
};

Built Build(const ModelConfig& c, at::ScalarType dtype, ActivationCheckpointing ac,
            LongContextOptions lc) {
  // One intra-op thread: OpenMP's spinning threads slow tiny ops 10x on a
  // busy 2-core machine, and the results do not depend on it.
  at::set_num_threads(1);
  Built b;
  b.factory = MakeDenseLinearFactory();
  LinearContext ctx;
  ctx.param_dtype = dtype;
  ctx.compute_dtype = dtype;
  ctx.generator = at::make_generator<at::CPUGeneratorImpl>(11);
  b.model = std::make_shared<Transformer>(c, *b.factory, ctx, MakeLocalAttention(), ac);
  b.model->set_long_context(lc);
  return b;
}

at::Tensor Tokens(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(vocab, {b, t}, g, at::kLong);
}

struct LossAndGrads {
  at::Tensor loss;
  std::vector<at::Tensor> grads;
};

LossAndGrads LossStep(Transformer& m, int64_t t, int64_t chunk) {
  at::Tensor tokens = Tokens(2, t + 1, m.config().vocab_size, 21);
  at::Tensor in = tokens.narrow(1, 0, t), tgt = tokens.narrow(1, 1, t);
  m.zero_grad();
  at::Tensor loss = m.Loss(in, tgt, WholeSequenceContext(t, at::kCPU), chunk);
  loss.backward();
  LossAndGrads r{loss.detach(), {}};
  for (const auto& p : m.parameters()) {
    EXPECT_TRUE(p.grad().defined());
    r.grads.push_back(p.grad().clone());
  }
  return r;
}

TEST(OffloadTest, SameLossAndGradientsBitwise) {
  const ModelConfig c = SmallConfig();
  for (int64_t tile : {0, 7}) {
    Built off = Build(c, at::kFloat, ActivationCheckpointing::kFull, {false, tile});
    Built on = Build(c, at::kFloat, ActivationCheckpointing::kFull, {true, tile});
    LossAndGrads a = LossStep(*off.model, 16, 10);
    LossAndGrads b = LossStep(*on.model, 16, 10);
    EXPECT_TRUE(at::equal(a.loss, b.loss)) << a.loss.item<float>() << " vs " << b.loss.item<float>();
    ASSERT_EQ(a.grads.size(), b.grads.size());
    for (size_t i = 0; i < a.grads.size(); ++i) {
      EXPECT_TRUE(at::equal(a.grads[i], b.grads[i])) << "tile " << tile << " parameter " << i;
    }
  }
}

TEST(OffloadTest, NoOffloadWithoutFullCheckpointingOrGrad) {
  // Offloading applies to full checkpointing only; under no-grad nothing is
  // saved, so nothing is stashed (the loss must still match).
  const ModelConfig c = SmallConfig();
  Built sel = Build(c, at::kFloat, ActivationCheckpointing::kSelective, {true, 0});
  Built ref = Build(c, at::kFloat, ActivationCheckpointing::kSelective, {false, 0});
  EXPECT_TRUE(at::equal(LossStep(*sel.model, 12, 100).loss, LossStep(*ref.model, 12, 100).loss));
  Built full = Build(c, at::kFloat, ActivationCheckpointing::kFull, {true, 0});
  at::NoGradGuard no_grad;
  at::Tensor tokens = Tokens(1, 13, c.vocab_size, 3);
  at::Tensor l = full.model->Loss(tokens.narrow(1, 0, 12), tokens.narrow(1, 1, 12),
                                  WholeSequenceContext(12, at::kCPU), 5);
  EXPECT_TRUE(std::isfinite(l.item<double>()));
}

// Three chained checkpointed "blocks" over one offloader, as
// Transformer::Hidden chains them: the first two inputs are stashed, the
// last stays; each backward fetches its own input (already prefetched) and
// prefetches the previous one.
TEST(OffloadTest, ScheduleStashPrefetchFetch) {
  auto offloader = MakeActivationOffloader(at::kCPU);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(5);
  at::Tensor w = at::randn({8, 8}, g, at::kDouble).requires_grad_(true);
  at::Tensor x0 = at::randn({3, 8}, g, at::kDouble).requires_grad_(true);
  auto fn = [w](const at::Tensor& in) { return at::tanh(at::matmul(in, w)); };
  auto chain = [&](bool offload) {
    at::Tensor x = x0;
    int64_t previous = -1;
    for (int i = 0; i < 3; ++i) {
      CheckpointOffload o;
      int64_t slot = -1;
      if (offload) {
        o.offloader = offloader;
        o.stash = i < 2;
        o.prefetch_slot = previous;
        o.stashed_slot = &slot;
      }
      x = CheckpointedCall(fn, x, {w}, o);
      if (offload) {
        EXPECT_EQ(slot, i < 2 ? i : -1);
      }
      previous = slot;
    }
    return x.pow(2).sum();
  };
  at::Tensor ref = chain(false);
  std::vector<at::Tensor> ref_grads = torch::autograd::grad({ref}, {x0, w});
  at::Tensor out = chain(true);
  ActivationOffloader::Stats s = offloader->stats();
  EXPECT_EQ(s.stashed, 2);
  EXPECT_EQ(s.prefetched, 0);
  EXPECT_EQ(s.host_bytes, 2 * 3 * 8 * 8);
  std::vector<at::Tensor> grads = torch::autograd::grad({out}, {x0, w});
  s = offloader->stats();
  EXPECT_EQ(s.prefetched, 2);
  EXPECT_EQ(s.fetched_late, 0);
  EXPECT_EQ(s.host_bytes, 0);
  EXPECT_EQ(s.peak_host_bytes, 2 * 3 * 8 * 8);
  EXPECT_TRUE(at::equal(out, ref));
  EXPECT_TRUE(at::equal(grads[0], ref_grads[0]));
  EXPECT_TRUE(at::equal(grads[1], ref_grads[1]));
}

TEST(OffloadTest, FetchWithoutPrefetchCopiesOnDemand) {
  auto offloader = MakeActivationOffloader(at::kCPU);
  at::Tensor x = at::arange(12, at::kFloat).view({3, 4});
  const int64_t slot = offloader->Stash(x);
  x.mul_(-1);  // the stash is a copy, not a view
  at::Tensor back = offloader->Fetch(slot);
  EXPECT_TRUE(at::equal(back, at::arange(12, at::kFloat).view({3, 4})));
  EXPECT_EQ(offloader->stats().fetched_late, 1);
}

TEST(TiledMlpTest, MatchesUntiledFloat64) {
  // Tiles that divide T and that do not (a short last tile), one tile, and
  // every checkpointing mode.
  const ModelConfig c = SmallConfig();
  const int64_t t = 14;
  for (ActivationCheckpointing ac : {ActivationCheckpointing::kNone,
                                     ActivationCheckpointing::kSelective,
                                     ActivationCheckpointing::kFull}) {
    Built ref = Build(c, at::kDouble, ac, {false, 0});
    LossAndGrads r = LossStep(*ref.model, t, 8);
    for (int64_t tile : {1, 3, 20}) {
      Built tiled = Build(c, at::kDouble, ac, {false, tile});
      LossAndGrads g = LossStep(*tiled.model, t, 8);
      EXPECT_LT(RelErr(g.loss, r.loss), 1e-13) << ActivationCheckpointingName(ac) << " tile " << tile;
      for (size_t i = 0; i < r.grads.size(); ++i) {
        EXPECT_LT(RelErr(g.grads[i], r.grads[i]), 1e-12)
            << ActivationCheckpointingName(ac) << " tile " << tile << " parameter " << i;
      }
    }
  }
}

TEST(TiledCallTest, GradientsMatchFiniteDifferences) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(8);
  at::Tensor w = at::randn({6, 5}, g, at::kDouble);
  at::Tensor x = at::randn({2, 7, 6}, g, at::kDouble);
  at::Tensor proj = at::randn({2, 7, 5}, g, at::kDouble);
  testing::ExpectGradientMatchesFiniteDifferences(
      [&](const std::vector<at::Tensor>& in) {
        const at::Tensor& weight = in[1];
        TensorFn fn = [weight](const at::Tensor& t) { return at::gelu(at::matmul(t, weight)); };
        return (TiledCall(fn, in[0], {weight}, /*dim=*/1, /*tile=*/3) * proj).sum();
      },
      {x, w});
}

// The training loop hands the config's fields to the model (kp-train's
// path): offload + tiles on trains bitwise like both off.
class RandomBatches final : public BatchSource {
 public:
  explicit RandomBatches(const Config& c) : c_(c) {}
  absl::StatusOr<at::Tensor> Batch(int64_t step, int micro) override {
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(100 * step + micro);
    return at::randint(c_.model.vocab_size, {c_.training.micro_batch, c_.training.seq_len + 1}, g,
                       at::kLong);
  }

 private:
  Config c_;
};

class NoMetrics final : public MetricsSink {
 public:
  void OnStep(const StepMetrics&) override {}
};

TEST(LongContextTrainLoopTest, OffloadAndTilesTrainLikeNeither) {
  auto run = [](bool on, LongContextOptions* seen) {
    at::set_num_threads(1);
    Config c;
    c.model = SmallConfig();
    c.training.seq_len = 16;
    c.training.micro_batch = 2;
    c.training.steps = 3;
    c.training.warmup_steps = 1;
    c.training.lr = 1e-2;
    c.training.activation_checkpointing = ActivationCheckpointing::kFull;
    c.training.offload_checkpoints = on;
    c.training.mlp_tile_tokens = on ? 5 : 0;
    c.training.loss_chunk_tokens = 12;
    c.data.builtin.num_symbols = 8;
    c.data.builtin.num_keys = 4;
    EXPECT_TRUE(ValidateConfig(c).ok());
    auto factory = MakeDenseLinearFactory();
    LinearContext ctx;
    ctx.generator = at::make_generator<at::CPUGeneratorImpl>(c.training.seed);
    Transformer model(c.model, *factory, ctx, MakeLocalAttention(),
                      c.training.activation_checkpointing);
    Optimizer optimizer(model, c.training);
    RandomBatches data(c);
    GradientSync sync;
    NoMetrics metrics;
    TrainLoopOptions o;
    o.end_step = 3;
    auto r = TrainLoop(c, model, optimizer, data, sync, nullptr, metrics, o);
    EXPECT_TRUE(r.ok()) << r.status();
    *seen = model.long_context();
    std::vector<at::Tensor> params;
    for (const auto& p : model.parameters()) params.push_back(p.detach().clone());
    return std::make_pair(r.ok() ? r->losses : std::vector<double>{}, params);
  };
  LongContextOptions seen_off, seen_on;
  auto off = run(false, &seen_off);
  auto on = run(true, &seen_on);
  EXPECT_FALSE(seen_off.offload_checkpoints);
  EXPECT_TRUE(seen_on.offload_checkpoints);
  EXPECT_EQ(seen_on.mlp_tile_tokens, 5);
  ASSERT_EQ(off.first.size(), 3u);
  ASSERT_EQ(on.first.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    // Tiles change the order of the weight-gradient sums (per tile, then
    // added), so equal to float32 rounding rather than bitwise.
    EXPECT_NEAR(on.first[i], off.first[i], 1e-5 * std::abs(off.first[i])) << "step " << i;
  }
  for (size_t i = 0; i < off.second.size(); ++i) {
    EXPECT_LT(RelErr(on.second[i], off.second[i]), 1e-4) << "parameter " << i;
  }
}

TEST(LongContextConfigTest, ParsesAndRejectsBadValues) {
  const std::string base =
      "model: {vocab_size: 128, d_model: 32, n_heads: 4, n_kv_heads: 4, max_seq_len: 256}\n";
  auto parse = [&](const std::string& training) {
    return ParseConfig(base + "training: {seq_len: 128, steps: 5, warmup_steps: 1, " + training +
                           "}\n",
                       "lc.yaml");
  };
  auto ok = parse("activation_checkpointing: full, offload_checkpoints: true, mlp_tile_tokens: 32");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->training.offload_checkpoints);
  EXPECT_EQ(ok->training.mlp_tile_tokens, 32);
  auto defaults = parse("activation_checkpointing: full");
  ASSERT_TRUE(defaults.ok());
  EXPECT_FALSE(defaults->training.offload_checkpoints);
  EXPECT_EQ(defaults->training.mlp_tile_tokens, 0);

  auto negative = parse("mlp_tile_tokens: -4");
  ASSERT_FALSE(negative.ok());
  EXPECT_NE(negative.status().message().find("training.mlp_tile_tokens"), std::string::npos)
      << negative.status();
  auto too_big = parse("mlp_tile_tokens: 129");
  ASSERT_FALSE(too_big.ok());
  EXPECT_NE(too_big.status().message().find("at most the tokens per rank"), std::string::npos)
      << too_big.status();
  auto not_int = parse("mlp_tile_tokens: lots");
  EXPECT_FALSE(not_int.ok());
  auto cp_tile = ParseConfig(base + "training: {seq_len: 128, steps: 5, warmup_steps: 1, "
                                    "mlp_tile_tokens: 64}\nparallel: {cp: 4}\n",
                             "lc.yaml");
  ASSERT_FALSE(cp_tile.ok());  // 128 / 4 = 32 tokens per rank
  EXPECT_NE(cp_tile.status().message().find("= 32"), std::string::npos) << cp_tile.status();
  auto selective = parse("activation_checkpointing: selective, offload_checkpoints: true");
  ASSERT_FALSE(selective.ok());
  EXPECT_NE(selective.status().message().find("training.offload_checkpoints"), std::string::npos)
      << selective.status();
  EXPECT_FALSE(parse("offload_checkpoints: maybe").ok());
}

}  // namespace
}  // namespace kp::engine
