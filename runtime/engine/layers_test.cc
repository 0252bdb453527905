// Each layer against a float64 reference written out naively, its autograd
// gradients against finite differences in float64, and its float32 result
// against float64 (tolerances stated per test).
#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "runtime/engine/attention.h"
#include "runtime/engine/layers.h"
#include "runtime/engine/recompute.h"
#include "runtime/engine/test_util.h"

namespace kp::engine {
namespace {

using testing::ExpectGradientMatchesFiniteDifferences;
using testing::Grads;
using testing::RelErr;

at::Tensor Randn(at::IntArrayRef shape, uint64_t seed, at::ScalarType dtype = at::kDouble) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, g, at::TensorOptions().dtype(dtype));
}

// float32 gradients of f against the same f in float64: relative error.
void ExpectFloatMatchesDouble(const testing::ScalarFn& f, const std::vector<at::Tensor>& inputs,
                              double tol) {
  std::vector<at::Tensor> xf, xd;
  for (const auto& x : inputs) {
    xf.push_back(x.to(at::kFloat));
    xd.push_back(x.to(at::kDouble));
  }
  {
    at::NoGradGuard no_grad;
    EXPECT_LT(RelErr(f(xf), f(xd)), tol);
  }
  auto gf = Grads(f, xf);
  auto gd = Grads(f, xd);
  for (size_t i = 0; i < gf.size(); ++i) EXPECT_LT(RelErr(gf[i], gd[i]), tol) << "input " << i;
}

// A scalar that weighs every output element differently (a plain sum would
// hide some gradient errors, e.g. in a normalisation).
at::Tensor Project(const at::Tensor& y, uint64_t seed = 7) {
  return (y.to(at::kDouble) * Randn(y.sizes(), seed)).sum();
}

TEST(RmsNormTest, MatchesNaiveFloat64) {
  at::Tensor x = Randn({3, 5, 16}, 1), w = Randn({16}, 2);
  at::Tensor got = RmsNorm(x, w, 1e-5, at::kDouble);
  at::Tensor ref = at::empty_like(x);
  auto xa = x.accessor<double, 3>();
  auto ra = ref.accessor<double, 3>();
  auto wa = w.accessor<double, 1>();
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j) {
      double ms = 0;
      for (int k = 0; k < 16; ++k) ms += xa[i][j][k] * xa[i][j][k] / 16.0;
      for (int k = 0; k < 16; ++k) ra[i][j][k] = xa[i][j][k] / std::sqrt(ms + 1e-5) * wa[k];
    }
  EXPECT_LT(RelErr(got, ref), 1e-12);
}

TEST(RmsNormTest, GradientsFiniteDifferencesAndFloat32) {
  auto f = [](const std::vector<at::Tensor>& in) {
    return Project(RmsNorm(in[0], in[1], 1e-5, in[0].scalar_type()));
  };
  std::vector<at::Tensor> in{Randn({2, 7, 32}, 3), Randn({32}, 4)};
  ExpectGradientMatchesFiniteDifferences(f, in);
  ExpectFloatMatchesDouble(f, in, 1e-5);
}

TEST(RopeTest, MatchesNaiveRotation) {
  const int64_t dh = 8;
  at::Tensor x = Randn({1, 2, 5, dh}, 5);
  at::Tensor pos = at::tensor({3, 7, 8, 20, 21}, at::kLong);  // non-contiguous, as a CP shard
  at::Tensor got = ApplyRope(x, MakeRopeTable(pos, dh, 10000.0, at::kDouble));
  auto xa = x.accessor<double, 4>();
  auto ga = got.accessor<double, 4>();
  for (int h = 0; h < 2; ++h)
    for (int t = 0; t < 5; ++t)
      for (int i = 0; i < dh / 2; ++i) {
        double angle = pos[t].item<int64_t>() * std::pow(10000.0, -2.0 * i / dh);
        double a = xa[0][h][t][i], b = xa[0][h][t][i + dh / 2];
        EXPECT_NEAR(ga[0][h][t][i], a * std::cos(angle) - b * std::sin(angle), 1e-12);
        EXPECT_NEAR(ga[0][h][t][i + dh / 2], b * std::cos(angle) + a * std::sin(angle), 1e-12);
      }
}

TEST(RopeTest, ScoresDependOnlyOnRelativePosition) {
  const int64_t dh = 16;
  at::Tensor q = Randn({1, 1, 1, dh}, 6), k = Randn({1, 1, 1, dh}, 7);
  auto score = [&](int64_t m, int64_t n) {
    at::Tensor qm = ApplyRope(q, MakeRopeTable(at::tensor({m}, at::kLong), dh, 500.0, at::kDouble));
    at::Tensor kn = ApplyRope(k, MakeRopeTable(at::tensor({n}, at::kLong), dh, 500.0, at::kDouble));
    return (qm * kn).sum().item<double>();
  };
  EXPECT_NEAR(score(5, 2), score(105, 102), 1e-9);
  EXPECT_NEAR(score(0, 9), score(1000, 1009), 1e-9);
  EXPECT_GT(std::abs(score(5, 2) - score(5, 9)), 1e-6);  // and it does depend on it
}

TEST(RopeTest, GradientsFiniteDifferencesAndFloat32) {
  at::Tensor pos = at::arange(6, at::kLong) * 3;
  auto f = [pos](const std::vector<at::Tensor>& in) {
    return Project(ApplyRope(in[0], MakeRopeTable(pos, 8, 10000.0, in[0].scalar_type())));
  };
  std::vector<at::Tensor> in{Randn({2, 3, 6, 8}, 8)};
  ExpectGradientMatchesFiniteDifferences(f, in);
  ExpectFloatMatchesDouble(f, in, 1e-5);
}

TEST(SwiGluTest, MatchesNaiveAndGradients) {
  at::Tensor gu = Randn({3, 4, 10}, 9);
  at::Tensor g = gu.narrow(-1, 0, 5), u = gu.narrow(-1, 5, 5);
  at::Tensor ref = g / (1 + at::exp(-g)) * u;
  EXPECT_LT(RelErr(SwiGlu(gu), ref), 1e-12);
  auto f = [](const std::vector<at::Tensor>& in) { return Project(SwiGlu(in[0])); };
  ExpectGradientMatchesFiniteDifferences(f, {gu});
  ExpectFloatMatchesDouble(f, {gu}, 1e-5);
}

// softmax(q k^T * scale + causal mask) v, query head h reading kv head h / (H / Hkv).
at::Tensor NaiveAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const int64_t h = q.size(1), hkv = k.size(1), t = q.size(2), d = q.size(3);
  at::Tensor idx = at::arange(h, at::kLong).div(h / hkv, "floor");
  at::Tensor kk = k.index_select(1, idx), vv = v.index_select(1, idx);
  at::Tensor s = at::matmul(q, kk.transpose(-1, -2)) / std::sqrt(static_cast<double>(d));
  at::Tensor mask = at::ones({t, t}, at::kBool).triu(1);
  s = s.masked_fill(mask, -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(s, -1), vv);
}

TEST(AttentionTest, LocalMatchesNaiveWithGroupedQueries) {
  auto attn = MakeLocalAttention();
  AttentionContext ctx;
  ctx.causal = true;
  at::Tensor q = Randn({2, 4, 9, 8}, 10), k = Randn({2, 2, 9, 8}, 11), v = Randn({2, 2, 9, 8}, 12);
  EXPECT_LT(RelErr(attn->Forward(q, k, v, ctx), NaiveAttention(q, k, v)), 1e-12);
  auto local = [&](const std::vector<at::Tensor>& in) {
    return Project(attn->Forward(in[0], in[1], in[2], ctx));
  };
  auto naive = [](const std::vector<at::Tensor>& in) {
    return Project(NaiveAttention(in[0], in[1], in[2]));
  };
  auto gl = Grads(local, {q, k, v});
  auto gn = Grads(naive, {q, k, v});
  for (int i = 0; i < 3; ++i) EXPECT_LT(RelErr(gl[i], gn[i]), 1e-10) << i;
  ExpectGradientMatchesFiniteDifferences(local, {q, k, v});
  ExpectFloatMatchesDouble(local, {q, k, v}, 1e-5);
}

TEST(CheckpointedCallTest, SameValueAndGradientsAsDirect) {
  at::Tensor w = Randn({6, 6}, 13);
  auto body = [](const at::Tensor& x, const at::Tensor& weight) {
    return at::tanh(at::matmul(x, weight)) * x;
  };
  auto direct = [&](const std::vector<at::Tensor>& in) { return Project(body(in[0], in[1])); };
  auto ckpt = [&](const std::vector<at::Tensor>& in) {
    at::Tensor weight = in[1];
    return Project(CheckpointedCall([body, weight](const at::Tensor& x) { return body(x, weight); }, in[0],
                                    {weight}));
  };
  std::vector<at::Tensor> in{Randn({4, 6}, 14), w};
  auto gd = Grads(direct, in);
  auto gc = Grads(ckpt, in);
  for (int i = 0; i < 2; ++i) EXPECT_LT(RelErr(gc[i], gd[i]), 1e-14) << i;
  ExpectGradientMatchesFiniteDifferences(ckpt, in);
}

TEST(ChunkedCrossEntropyTest, EqualsUnchunkedLossAndGradients) {
  const int64_t n = 37, d = 8, vocab = 11;  // 37 is no multiple of the chunk
  at::Tensor h = Randn({n, d}, 15), w = Randn({vocab, d}, 16);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(17);
  at::Tensor targets = at::randint(vocab, {n}, g, at::kLong);
  auto unchunked = [&](const std::vector<at::Tensor>& in) {
    return at::cross_entropy_loss(at::linear(in[0], in[1]), targets);
  };
  for (int64_t chunk : {1, 5, 16, 37, 100}) {
    auto chunked = [&](const std::vector<at::Tensor>& in) {
      at::Tensor weight = in[1];
      return ChunkedCrossEntropy(
          in[0], targets, [weight](const at::Tensor& x) { return at::linear(x, weight); },
          {weight}, chunk);
    };
    {
      at::NoGradGuard no_grad;
      EXPECT_LT(RelErr(chunked({h, w}), unchunked({h, w})), 1e-13) << chunk;
    }
    auto gc = Grads(chunked, {h, w});
    auto gu = Grads(unchunked, {h, w});
    for (int i = 0; i < 2; ++i) EXPECT_LT(RelErr(gc[i], gu[i]), 1e-12) << chunk << " " << i;
    if (chunk == 5) {
      ExpectGradientMatchesFiniteDifferences(chunked, {h, w});
      ExpectFloatMatchesDouble(chunked, {h, w}, 1e-5);
    }
  }
}

}  // namespace
}  // namespace kp::engine
