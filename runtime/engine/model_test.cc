// The whole model: a block's gradients against finite differences and
// float32 against float64; activation checkpointing gives the same gradients
// as none; the chunked loss equals the loss of the full logits.
#include "runtime/engine/model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "runtime/engine/test_util.h"

namespace kp::engine {
namespace {

using testing::RelErr;
using testing::TinyConfig;

struct Built {
  std::unique_ptr<LinearFactory> factory;
  std::shared_ptr<Transformer> model;
};

// Same seed -> same weights in every dtype (drawn in fp32 on a CPU generator).
Built Build(const ModelConfig& c, at::ScalarType dtype, ActivationCheckpointing ac,
            uint64_t seed = 5) {
  Built b;
  b.factory = MakeDenseLinearFactory();
  LinearContext ctx;
  ctx.param_dtype = dtype;
  ctx.compute_dtype = dtype;
  ctx.generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  b.model = std::make_shared<Transformer>(c, *b.factory, ctx, MakeLocalAttention(), ac);
  return b;
}

at::Tensor Tokens(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(vocab, {b, t}, g, at::kLong);
}

std::vector<at::Tensor> LossGrads(Transformer& m, const at::Tensor& in, const at::Tensor& tgt,
                                  int64_t chunk, at::Tensor* loss_out = nullptr) {
  m.zero_grad();
  at::Tensor loss = m.Loss(in, tgt, WholeSequenceContext(in.size(1), at::kCPU), chunk);
  loss.backward();
  if (loss_out) *loss_out = loss.detach();
  std::vector<at::Tensor> grads;
  for (const auto& p : m.parameters()) grads.push_back(p.grad().clone());
  return grads;
}

TEST(BlockTest, GradientsFiniteDifferencesAndFloat32) {
  ModelConfig c = TinyConfig();
  auto factory = MakeDenseLinearFactory();
  auto attention = MakeLocalAttention();
  auto make = [&](at::ScalarType dtype) {
    LinearContext ctx;
    ctx.param_dtype = dtype;
    ctx.compute_dtype = dtype;
    ctx.generator = at::make_generator<at::CPUGeneratorImpl>(3);
    return std::make_shared<Block>(0, c, *factory, ctx, attention.get());
  };
  auto bd = make(at::kDouble);
  auto bf = make(at::kFloat);
  const int64_t t = 6;
  AttentionContext actx = WholeSequenceContext(t, at::kCPU);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(4);
  at::Tensor x = at::randn({2, t, c.d_model}, g, at::kDouble);
  at::Tensor proj = at::randn({2, t, c.d_model}, g, at::kDouble);
  auto run = [&](Block& b, const at::Tensor& in) {
    RopeTable rope = MakeRopeTable(actx.positions, c.head_dim(), c.rope_theta, in.scalar_type());
    return (b.Forward(in, rope, actx, ActivationCheckpointing::kNone).to(at::kDouble) * proj).sum();
  };
  std::vector<at::Tensor> params = bd->parameters();
  // Gradient wrt the input by finite differences.
  auto f = [&](const std::vector<at::Tensor>& in) { return run(*bd, in[0]); };
  testing::ExpectGradientMatchesFiniteDifferences(f, {x});
  // Parameter gradients: a directional finite difference over all of them.
  bd->zero_grad();
  run(*bd, x).backward();
  at::Tensor predicted = at::zeros({}, at::kDouble);
  std::vector<at::Tensor> dirs;
  for (auto& p : params) {
    dirs.push_back(at::randn(p.sizes(), g, at::kDouble));
    predicted += (p.grad() * dirs.back()).sum();
  }
  const double eps = 1e-6;
  double fp, fm;
  {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) params[i].add_(dirs[i], eps);
    fp = run(*bd, x).item<double>();
    for (size_t i = 0; i < params.size(); ++i) params[i].add_(dirs[i], -2 * eps);
    fm = run(*bd, x).item<double>();
    for (size_t i = 0; i < params.size(); ++i) params[i].add_(dirs[i], eps);
  }
  EXPECT_NEAR((fp - fm) / (2 * eps), predicted.item<double>(),
              1e-6 * (1 + std::abs(predicted.item<double>())));

  // float32 against float64 (same weights): forward and every gradient.
  bf->zero_grad();
  at::Tensor xf = x.to(at::kFloat).requires_grad_(true);
  at::Tensor xd = x.clone().requires_grad_(true);
  bd->zero_grad();
  at::Tensor yf = run(*bf, xf);
  at::Tensor yd = run(*bd, xd);
  EXPECT_LT(RelErr(yf, yd), 1e-5);
  yf.backward();
  yd.backward();
  EXPECT_LT(RelErr(xf.grad(), xd.grad()), 1e-4);
  auto pf = bf->parameters();
  for (size_t i = 0; i < pf.size(); ++i) EXPECT_LT(RelErr(pf[i].grad(), params[i].grad()), 1e-4) << i;
}

TEST(ModelTest, ActivationCheckpointingGivesSameGradients) {
  ModelConfig c = TinyConfig();
  at::Tensor tok = Tokens(2, 13, c.vocab_size, 7);
  at::Tensor in = tok.narrow(1, 0, 12), tgt = tok.narrow(1, 1, 12);
  auto none = Build(c, at::kFloat, ActivationCheckpointing::kNone);
  auto sel = Build(c, at::kFloat, ActivationCheckpointing::kSelective);
  auto full = Build(c, at::kFloat, ActivationCheckpointing::kFull);
  at::Tensor l0, l1, l2;
  auto g0 = LossGrads(*none.model, in, tgt, 7, &l0);
  auto g1 = LossGrads(*sel.model, in, tgt, 7, &l1);
  auto g2 = LossGrads(*full.model, in, tgt, 7, &l2);
  EXPECT_EQ(l0.item<float>(), l1.item<float>());
  EXPECT_EQ(l0.item<float>(), l2.item<float>());
  ASSERT_EQ(g0.size(), g1.size());
  ASSERT_EQ(g0.size(), g2.size());
  // The recomputation runs the same kernels on the same inputs; only the
  // order in which parameter gradients are summed may differ.
  for (size_t i = 0; i < g0.size(); ++i) {
    EXPECT_LT(RelErr(g1[i], g0[i]), 1e-6) << i;
    EXPECT_LT(RelErr(g2[i], g0[i]), 1e-6) << i;
  }
}

TEST(ModelTest, ChunkedLossEqualsFullLogitsLoss) {
  for (bool tie : {false, true}) {
    ModelConfig c = TinyConfig();
    c.tie_embeddings = tie;
    auto m = Build(c, at::kDouble, ActivationCheckpointing::kNone);
    at::Tensor tok = Tokens(3, 11, c.vocab_size, 8);
    at::Tensor in = tok.narrow(1, 0, 10), tgt = tok.narrow(1, 1, 10);
    at::Tensor loss;
    auto g = LossGrads(*m.model, in, tgt, 4, &loss);
    m.model->zero_grad();
    at::Tensor logits = m.model->Logits(in, WholeSequenceContext(10, at::kCPU));
    at::Tensor ref = at::cross_entropy_loss(logits.reshape({-1, c.vocab_size}), tgt.reshape({-1}));
    ref.backward();
    EXPECT_LT(RelErr(loss, ref), 1e-13);
    auto params = m.model->parameters();
    for (size_t i = 0; i < params.size(); ++i) EXPECT_LT(RelErr(g[i], params[i].grad()), 1e-11) << i;
  }
}

TEST(ModelTest, FullModelFloat32MatchesFloat64) {
  ModelConfig c = TinyConfig();
  auto mf = Build(c, at::kFloat, ActivationCheckpointing::kFull);
  auto md = Build(c, at::kDouble, ActivationCheckpointing::kNone);
  at::Tensor tok = Tokens(2, 9, c.vocab_size, 9);
  at::Tensor in = tok.narrow(1, 0, 8), tgt = tok.narrow(1, 1, 8);
  at::Tensor lf, ld;
  auto gf = LossGrads(*mf.model, in, tgt, 5, &lf);
  auto gd = LossGrads(*md.model, in, tgt, 5, &ld);
  EXPECT_NEAR(lf.item<double>(), ld.item<double>(), 1e-5 * ld.item<double>());
  for (size_t i = 0; i < gf.size(); ++i) EXPECT_LT(RelErr(gf[i], gd[i]), 1e-3) << i;
}

TEST(ModelTest, ParameterGroupsAndCounts) {
  ModelConfig c = TinyConfig();
  for (bool tie : {false, true}) {
    c.tie_embeddings = tie;
    auto m = Build(c, at::kFloat, ActivationCheckpointing::kNone);
    int64_t decay = 0, no_decay = 0;
    for (const auto& p : m.model->DecayParameters()) decay += p.numel();
    for (const auto& p : m.model->NoDecayParameters()) no_decay += p.numel();
    EXPECT_EQ(decay + no_decay, m.model->NumParameters(true));
    const int64_t d = c.d_model, hd = c.head_dim();
    const int64_t per_block = d * (c.n_heads + 2 * c.n_kv_heads) * hd + c.n_heads * hd * d +
                              3 * d * c.ffn_hidden + 2 * d;
    const int64_t emb = c.vocab_size * d;
    EXPECT_EQ(m.model->NumParameters(true), c.n_layers * per_block + d + emb + (tie ? 0 : emb));
    EXPECT_EQ(m.model->NumParameters(false), c.n_layers * per_block + d + emb);
  }
}

TEST(ModelTest, PositionsAreExplicit) {
  // Shifting every position by the same amount leaves a causal model's output
  // unchanged (RoPE is relative), but reordering them changes it.
  ModelConfig c = TinyConfig();
  auto m = Build(c, at::kDouble, ActivationCheckpointing::kNone);
  at::Tensor tok = Tokens(1, 8, c.vocab_size, 10);
  AttentionContext a = WholeSequenceContext(8, at::kCPU);
  AttentionContext shifted = a;
  shifted.positions = a.positions + 100;
  AttentionContext reversed = a;
  reversed.positions = a.positions.flip(0);
  at::NoGradGuard no_grad;
  at::Tensor base = m.model->Logits(tok, a);
  EXPECT_LT(RelErr(m.model->Logits(tok, shifted), base), 1e-10);
  EXPECT_GT(RelErr(m.model->Logits(tok, reversed), base), 1e-6);
}

}  // namespace
}  // namespace kp::engine
