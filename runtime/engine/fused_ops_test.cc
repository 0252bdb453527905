// The paths of fused_ops that run without a GPU: the ATen composition (the
// reference the fused kernels are tested against on the GPU) checked against
// float64 finite differences and an independent float64 formula, the fallback
// of the fused entry points on CPU, and the config switch.
#include "runtime/engine/fused_ops.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "runtime/engine/config.h"
#include "runtime/engine/test_util.h"

namespace kp::engine {
namespace {

using testing::ExpectGradientMatchesFiniteDifferences;

at::TensorOptions F64() { return at::TensorOptions().dtype(at::kDouble); }

// Positions that are not 0..T-1 (a context-parallel shard's), so a table
// indexed by the wrong row shows.
RopeTable Table(int64_t t, int64_t head_dim, at::ScalarType dtype) {
  at::Tensor positions = at::arange(t, at::TensorOptions().dtype(at::kLong)) * 3 + 5;
  return MakeRopeTable(positions, head_dim, 10000.0, dtype);
}

TEST(SplitQkvWithRopeReference, MatchesRotationOfEachPair) {
  // GQA: 4 query heads, 2 kv heads, head_dim 6.
  const int64_t b = 2, t = 5, h = 4, hkv = 2, dh = 6, half = dh / 2;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  at::Tensor qkv = at::randn({b, t, (h + 2 * hkv) * dh}, gen, F64());
  RopeTable rope = Table(t, dh, at::kDouble);
  QkvHeads out = SplitQkvWithRopeReference(qkv, rope, h, hkv);
  ASSERT_EQ(out.q.sizes(), (std::vector<int64_t>{b, h, t, dh}));
  ASSERT_EQ(out.k.sizes(), (std::vector<int64_t>{b, hkv, t, dh}));
  ASSERT_EQ(out.v.sizes(), (std::vector<int64_t>{b, hkv, t, dh}));
  auto x = qkv.accessor<double, 3>();
  auto q = out.q.accessor<double, 4>();
  auto k = out.k.accessor<double, 4>();
  auto v = out.v.accessor<double, 4>();
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t p = 0; p < t; ++p) {
      const double pos = 3.0 * p + 5;
      for (int64_t i = 0; i < half; ++i) {
        const double angle = pos * std::pow(10000.0, -2.0 * i / dh);
        const double c = std::cos(angle), s = std::sin(angle);
        for (int64_t hh = 0; hh < h + hkv; ++hh) {
          const double x1 = x[bi][p][hh * dh + i], x2 = x[bi][p][hh * dh + i + half];
          const double y1 = hh < h ? q[bi][hh][p][i] : k[bi][hh - h][p][i];
          const double y2 = hh < h ? q[bi][hh][p][i + half] : k[bi][hh - h][p][i + half];
          EXPECT_NEAR(y1, x1 * c - x2 * s, 1e-12);
          EXPECT_NEAR(y2, x2 * c + x1 * s, 1e-12);
        }
        for (int64_t hh = 0; hh < hkv; ++hh) {
          EXPECT_EQ(v[bi][hh][p][i], x[bi][p][(h + hkv + hh) * dh + i]);
        }
      }
    }
  }
}

TEST(SplitQkvWithRopeReference, GradientMatchesFloat64FiniteDifferences) {
  const int64_t b = 2, t = 3, h = 3, hkv = 1, dh = 8;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  at::Tensor qkv = at::randn({b, t, (h + 2 * hkv) * dh}, gen, F64());
  at::Tensor wq = at::randn({b, h, t, dh}, gen, F64());
  at::Tensor wk = at::randn({b, hkv, t, dh}, gen, F64());
  at::Tensor wv = at::randn({b, hkv, t, dh}, gen, F64());
  RopeTable rope = Table(t, dh, at::kDouble);
  ExpectGradientMatchesFiniteDifferences(
      [&](const std::vector<at::Tensor>& in) {
        // fused=true: on CPU this must take the composition.
        QkvHeads o = SplitQkvWithRope(in[0], rope, h, hkv, /*fused=*/true);
        return (o.q * wq).sum() + (o.k * wk).sum() + (o.v * wv).sum();
      },
      {qkv});
}

TEST(SwiGluActivation, GradientMatchesFloat64FiniteDifferences) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  at::Tensor gate_up = at::randn({2, 3, 2 * 7}, gen, F64()) * 2;
  at::Tensor w = at::randn({2, 3, 7}, gen, F64());
  ExpectGradientMatchesFiniteDifferences(
      [&](const std::vector<at::Tensor>& in) {
        return (SwiGluActivation(in[0], /*fused=*/true) * w).sum();
      },
      {gate_up});
}

TEST(FusedOps, CpuTakesTheComposition) {
  EXPECT_FALSE(FusedKernelsApply(at::Device(at::kCPU), at::kBFloat16));
  EXPECT_EQ(RopeTableDtype(true, at::Device(at::kCPU), at::kFloat), at::kFloat);
  EXPECT_EQ(RopeTableDtype(true, at::Device(at::kCPU), at::kDouble), at::kDouble);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4);
  at::Tensor qkv = at::randn({1, 4, 4 * 8}, gen, at::TensorOptions().dtype(at::kFloat));
  RopeTable rope = Table(4, 8, at::kFloat);
  QkvHeads fused = SplitQkvWithRope(qkv, rope, 2, 1, true);
  QkvHeads plain = SplitQkvWithRope(qkv, rope, 2, 1, false);
  EXPECT_TRUE(at::equal(fused.q, plain.q) && at::equal(fused.k, plain.k) &&
              at::equal(fused.v, plain.v));
  at::Tensor gu = at::randn({3, 10}, gen, at::TensorOptions().dtype(at::kFloat));
  EXPECT_TRUE(at::equal(SwiGluActivation(gu, true), SwiGlu(gu)));
}

TEST(FusedOps, ReferenceTakesATableOfAnotherDtype) {
  // The model builds an fp32 table for the fused path; if a tensor reaches
  // the composition anyway it must get the table in its own dtype.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  at::Tensor qkv = at::randn({1, 3, 3 * 4}, gen, F64());
  QkvHeads a = SplitQkvWithRopeReference(qkv, Table(3, 4, at::kFloat), 1, 1);
  QkvHeads b = SplitQkvWithRopeReference(qkv, Table(3, 4, at::kDouble), 1, 1);
  EXPECT_EQ(a.q.scalar_type(), at::kDouble);
  EXPECT_LT((a.q - b.q).abs().max().item<double>(), 1e-6);  // fp32 table rounding
}

TEST(FusedKernelsConfig, DefaultsOnAndParses) {
  auto on = ParseConfig("model: {n_heads: 4}\n", "on.yaml");
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(on->model.fused_kernels);
  auto off = ParseConfig("model: {fused_kernels: false}\n", "off.yaml");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->model.fused_kernels);
  auto bad = ParseConfig("model: {fused_kernels: maybe}\n", "bad.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("model.fused_kernels"), std::string::npos)
      << bad.status();
}

}  // namespace
}  // namespace kp::engine
