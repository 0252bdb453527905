#include "kernels/rope.h"

#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/bf16_test_util.h"
#include "kernels/gpu_test_util.h"

namespace kp::kernels {
namespace {

using testing::Bf16Close;
using testing::DeviceBuffer;
using testing::RandomBf16;

// cos/sin of random (not position-ordered) angles: a wrong table row or
// column shows up as a wrong value.
struct Table {
  std::vector<float> cos, sin;
};
Table RandomTable(const RopeShape& s, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> angle(-3.14159f, 3.14159f);
  Table t;
  for (int64_t i = 0; i < s.seq * (s.head_dim / 2); ++i) {
    const float a = angle(gen);
    t.cos.push_back(std::cos(a));
    t.sin.push_back(std::sin(a));
  }
  return t;
}

int64_t QSize(const RopeShape& s) { return s.batch * s.heads * s.seq * s.head_dim; }
int64_t KvSize(const RopeShape& s) { return s.batch * s.kv_heads * s.seq * s.head_dim; }
int64_t QkvSize(const RopeShape& s) { return s.batch * s.seq * s.row_width(); }

double Dot(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d += static_cast<double>(a[i]) * b[i];
  return d;
}

TEST(RopeReference, BackwardIsTheAdjointOfForward) {
  // <F(x), g> == <x, F^T(g)> for every x, g: the backward computes the
  // gradient of the forward exactly when it is its transpose.
  const RopeShape s{2, 7, 4, 2, 12};
  const Table t = RandomTable(s, 1);
  std::vector<float> x = RandomBf16(QkvSize(s), 2).values;
  std::vector<float> gq = RandomBf16(QSize(s), 3).values, gk = RandomBf16(KvSize(s), 4).values,
                     gv = RandomBf16(KvSize(s), 5).values;
  std::vector<float> q(QSize(s)), k(KvSize(s)), v(KvSize(s)), dx(QkvSize(s));
  RopeQkvForwardReference(x.data(), t.cos.data(), t.sin.data(), s, q.data(), k.data(), v.data());
  RopeQkvBackwardReference(gq.data(), gk.data(), gv.data(), t.cos.data(), t.sin.data(), s,
                           dx.data());
  const double lhs = Dot(q, gq) + Dot(k, gk) + Dot(v, gv);
  const double rhs = Dot(x, dx);
  EXPECT_NEAR(lhs, rhs, 1e-4 * (1 + std::abs(rhs)));
}

TEST(RopeReference, RotatesPairsAndInvertsExactly) {
  // The rotation keeps each pair's norm, and backward(forward(x)) == x
  // because the transpose of a rotation is its inverse.
  const RopeShape s{1, 5, 3, 1, 8};
  const Table t = RandomTable(s, 6);
  std::vector<float> x = RandomBf16(QkvSize(s), 7).values;
  std::vector<float> q(QSize(s)), k(KvSize(s)), v(KvSize(s)), back(QkvSize(s));
  RopeQkvForwardReference(x.data(), t.cos.data(), t.sin.data(), s, q.data(), k.data(), v.data());
  // Pair norms of q head 2 at position 3 against the input's.
  const int64_t half = s.head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float* in = x.data() + 3 * s.row_width() + 2 * s.head_dim;
    const float* out = q.data() + (2 * s.seq + 3) * s.head_dim;
    EXPECT_NEAR(std::hypot(out[i], out[i + half]), std::hypot(in[i], in[i + half]), 1e-5);
  }
  RopeQkvBackwardReference(q.data(), k.data(), v.data(), t.cos.data(), t.sin.data(), s,
                           back.data());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(back[i], x[i], 1e-5) << i;
}

// Shapes for the GPU comparisons: odd batch and sequence sizes, GQA and MQA,
// head dims on the 16-byte path (Dh/2 % 8 == 0) and off it (scalar path).
std::vector<RopeShape> Shapes() {
  return {{1, 1, 1, 1, 16},  {2, 37, 4, 2, 64},  {3, 5, 3, 1, 128}, {1, 9, 2, 2, 6},
          {2, 17, 6, 3, 80}, {5, 3, 8, 8, 128},  {1, 33, 4, 4, 10}, {2, 11, 12, 4, 96}};
}

std::string Name(const RopeShape& s) {
  return "B" + std::to_string(s.batch) + " T" + std::to_string(s.seq) + " H" +
         std::to_string(s.heads) + " Hkv" + std::to_string(s.kv_heads) + " Dh" +
         std::to_string(s.head_dim);
}

template <typename T>
bool Upload(const DeviceBuffer& d, const std::vector<T>& h) {
  return d.get() && cudaMemcpy(d.get(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice) ==
                        cudaSuccess;
}

std::vector<float> DownloadBf16(const DeviceBuffer& d, size_t n) {
  std::vector<__nv_bfloat16> h(n);
  cudaMemcpy(h.data(), d.get(), n * sizeof(__nv_bfloat16), cudaMemcpyDeviceToHost);
  return testing::ToFloat(h);
}

// The two layouts a [B, heads, T, Dh] tensor takes here: contiguous, or the
// transposed view of a [B, T, heads, Dh] buffer.
HeadStrides Layout(const RopeShape& s, int64_t heads, bool transposed) {
  return transposed ? HeadStrides{s.seq * heads * s.head_dim, s.head_dim, heads * s.head_dim}
                    : HeadStrides::Contiguous(heads, s.seq, s.head_dim);
}

// Element (b, h, t, i) of a [B, heads, T, Dh] tensor stored with `st`, for
// every index in contiguous order (memory -> logical).
template <typename T>
std::vector<T> Gather(const std::vector<T>& mem, const RopeShape& s, int64_t heads,
                      const HeadStrides& st) {
  std::vector<T> out;
  out.reserve(mem.size());
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t p = 0; p < s.seq; ++p)
        for (int64_t i = 0; i < s.head_dim; ++i)
          out.push_back(mem[b * st.batch + h * st.head + p * st.seq + i]);
  return out;
}

TEST(RopeCuda, ForwardMatchesReference) {
  KP_SKIP_WITHOUT_GPU();
  uint32_t seed = 100;
  for (const RopeShape& s : Shapes()) {
    for (bool transposed : {false, true}) {
      SCOPED_TRACE(Name(s) + (transposed ? " [B, T, heads, Dh] outputs" : " contiguous outputs"));
      const Table t = RandomTable(s, ++seed);
      const testing::Bf16Data x = RandomBf16(QkvSize(s), ++seed);
      DeviceBuffer dx(QkvSize(s) * 2), dcos(t.cos.size() * 4), dsin(t.sin.size() * 4),
          dq(QSize(s) * 2), dk(KvSize(s) * 2), dv(KvSize(s) * 2);
      ASSERT_TRUE(Upload(dx, x.bits) && Upload(dcos, t.cos) && Upload(dsin, t.sin));
      const HeadStrides sq = Layout(s, s.heads, transposed), skv = Layout(s, s.kv_heads, transposed);
      KP_CUDA_OK(RopeQkvForward(dx.get(), dcos.as<float>(), dsin.as<float>(), s, dq.get(), sq,
                                dk.get(), skv, dv.get(), skv, nullptr));
      KP_CUDA_OK(cudaDeviceSynchronize());
      std::vector<float> q(QSize(s)), k(KvSize(s)), v(KvSize(s));
      RopeQkvForwardReference(x.values.data(), t.cos.data(), t.sin.data(), s, q.data(), k.data(),
                              v.data());
      EXPECT_TRUE(Bf16Close(Gather(DownloadBf16(dq, q.size()), s, s.heads, sq), q, "q"));
      EXPECT_TRUE(Bf16Close(Gather(DownloadBf16(dk, k.size()), s, s.kv_heads, skv), k, "k"));
      // v is copied bit for bit.
      EXPECT_EQ(Gather(DownloadBf16(dv, v.size()), s, s.kv_heads, skv), v);
    }
  }
}

// dq, dk, dv as the cuDNN/flash backward may hand them over: contiguous
// [B, heads, T, Dh], or transposed views of [B, T, heads, Dh] buffers.
TEST(RopeCuda, BackwardMatchesReferenceForContiguousAndStridedGradients) {
  KP_SKIP_WITHOUT_GPU();
  uint32_t seed = 200;
  for (const RopeShape& s : Shapes()) {
    for (bool transposed : {false, true}) {
      SCOPED_TRACE(Name(s) + (transposed ? " strided" : " contiguous"));
      const Table t = RandomTable(s, ++seed);
      const testing::Bf16Data gq = RandomBf16(QSize(s), ++seed), gk = RandomBf16(KvSize(s), ++seed),
                              gv = RandomBf16(KvSize(s), ++seed);
      // Lay each gradient out in memory as the strides say.
      auto layout = [&](const testing::Bf16Data& g, int64_t heads, HeadStrides* st) {
        *st = Layout(s, heads, transposed);
        std::vector<__nv_bfloat16> mem(g.bits.size());
        for (int64_t b = 0; b < s.batch; ++b)
          for (int64_t h = 0; h < heads; ++h)
            for (int64_t p = 0; p < s.seq; ++p)
              for (int64_t i = 0; i < s.head_dim; ++i)
                mem[b * st->batch + h * st->head + p * st->seq + i] =
                    g.bits[((b * heads + h) * s.seq + p) * s.head_dim + i];
        return mem;
      };
      HeadStrides sq, sk, sv;
      const auto mq = layout(gq, s.heads, &sq), mk = layout(gk, s.kv_heads, &sk),
                 mv = layout(gv, s.kv_heads, &sv);
      DeviceBuffer dq(QSize(s) * 2), dk(KvSize(s) * 2), dv(KvSize(s) * 2),
          dcos(t.cos.size() * 4), dsin(t.sin.size() * 4), dx(QkvSize(s) * 2);
      ASSERT_TRUE(Upload(dq, mq) && Upload(dk, mk) && Upload(dv, mv) && Upload(dcos, t.cos) &&
                  Upload(dsin, t.sin) && dx.get());
      KP_CUDA_OK(RopeQkvBackward(dq.get(), sq, dk.get(), sk, dv.get(), sv, dcos.as<float>(),
                                 dsin.as<float>(), s, dx.get(), nullptr));
      KP_CUDA_OK(cudaDeviceSynchronize());
      std::vector<float> want(QkvSize(s));
      RopeQkvBackwardReference(gq.values.data(), gk.values.data(), gv.values.data(),
                               t.cos.data(), t.sin.data(), s, want.data());
      EXPECT_TRUE(Bf16Close(DownloadBf16(dx, want.size()), want, "dqkv"));
    }
  }
}

TEST(RopeCuda, Bandwidth) {
  KP_SKIP_WITHOUT_GPU();
  // The 1.3B model's attention input: B=4, T=4096, H=Hkv=16, Dh=128.
  const RopeShape s{4, 4096, 16, 16, 128};
  const Table t = RandomTable(s, 300);
  const testing::Bf16Data x = RandomBf16(QkvSize(s), 301);
  DeviceBuffer dx(QkvSize(s) * 2), dcos(t.cos.size() * 4), dsin(t.sin.size() * 4),
      dq(QSize(s) * 2), dk(KvSize(s) * 2), dv(KvSize(s) * 2), dgrad(QkvSize(s) * 2);
  ASSERT_TRUE(Upload(dx, x.bits) && Upload(dcos, t.cos) && Upload(dsin, t.sin) && dgrad.get());
  // Each element read once and written once; the tables once (they stay in L2).
  const double bytes = 2.0 * QkvSize(s) * 2 + 2.0 * t.cos.size() * 4;
  for (bool transposed : {true, false}) {
    const std::string layout = transposed ? " [B,T,H,Dh] layout" : " contiguous [B,H,T,Dh]";
    const HeadStrides sq = Layout(s, s.heads, transposed), skv = Layout(s, s.kv_heads, transposed);
    const double fwd = testing::MeasureBandwidth(
        "rope_qkv_forward B4 T4096 H16 Dh128" + layout, bytes, [&] {
          return RopeQkvForward(dx.get(), dcos.as<float>(), dsin.as<float>(), s, dq.get(), sq,
                                dk.get(), skv, dv.get(), skv, nullptr);
        });
    const double bwd = testing::MeasureBandwidth(
        "rope_qkv_backward B4 T4096 H16 Dh128" + layout, bytes, [&] {
          return RopeQkvBackward(dq.get(), sq, dk.get(), skv, dv.get(), skv, dcos.as<float>(),
                                 dsin.as<float>(), s, dgrad.get(), nullptr);
        });
    KP_CUDA_OK(cudaDeviceSynchronize());
    // Far below any H100/H200 copy rate would mean a broken launch shape.
    EXPECT_GT(fwd, 300.0);
    EXPECT_GT(bwd, 300.0);
  }
}

}  // namespace
}  // namespace kp::kernels
