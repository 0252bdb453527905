#include "kernels/cross_entropy.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/bf16_test_util.h"
#include "kernels/gpu_test_util.h"

namespace kp::kernels {
namespace {

using testing::Bf16Close;
using testing::DeviceBuffer;
using testing::RandomBf16;

std::vector<int64_t> RandomTargets(int64_t rows, int64_t vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> dist(0, vocab - 1);
  std::vector<int64_t> t(rows);
  for (auto& x : t) x = dist(gen);
  return t;
}

std::vector<float> RandomFloats(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

TEST(CrossEntropyReference, BackwardMatchesFiniteDifferencesOfForward) {
  const int64_t rows = 3, vocab = 17;
  std::vector<float> x = RandomBf16(rows * vocab, 1, 4.0f).values;
  const std::vector<int64_t> t = RandomTargets(rows, vocab, 2);
  const std::vector<float> g = RandomFloats(rows, 3);
  std::vector<double> grad(rows * vocab), loss(rows), lse(rows);
  CrossEntropyBackwardReference(x.data(), rows, vocab, t.data(), g.data(), 1, grad.data());
  // Central differences of g[r] * loss[r] in each logit; the float inputs
  // limit h to ~1e-3 of an O(4) logit, so the tolerance is 1e-4.
  for (int64_t i = 0; i < rows * vocab; ++i) {
    const float orig = x[i];
    const float h = 1e-2f;
    x[i] = orig + h;
    CrossEntropyForwardReference(x.data(), rows, vocab, t.data(), loss.data(), lse.data());
    const double up = loss[i / vocab];
    x[i] = orig - h;
    CrossEntropyForwardReference(x.data(), rows, vocab, t.data(), loss.data(), lse.data());
    const double down = loss[i / vocab];
    x[i] = orig;
    const double want = g[i / vocab] * (up - down) / (static_cast<double>(orig + h) - (orig - h));
    EXPECT_NEAR(grad[i], want, 1e-4) << i;
  }
}

TEST(CrossEntropyReference, InvalidTargetGivesNan) {
  const int64_t rows = 2, vocab = 5;
  const std::vector<float> x = RandomBf16(rows * vocab, 4).values;
  const std::vector<int64_t> t = {vocab, 2};
  std::vector<double> loss(rows), lse(rows);
  CrossEntropyForwardReference(x.data(), rows, vocab, t.data(), loss.data(), lse.data());
  EXPECT_TRUE(std::isnan(loss[0]));
  EXPECT_FALSE(std::isnan(loss[1]));
  EXPECT_FALSE(std::isnan(lse[0]));
}

template <typename T>
bool Upload(const DeviceBuffer& d, const std::vector<T>& h) {
  return d.get() && cudaMemcpy(d.get(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice) ==
                        cudaSuccess;
}

template <typename T>
std::vector<T> Download(const DeviceBuffer& d, size_t n) {
  std::vector<T> h(n);
  cudaMemcpy(h.data(), d.get(), n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}

struct Shape {
  int64_t rows, vocab, stride;
};

// Vocabularies on the 16-byte path (1000, 50304) and off it (257, and a
// stride that is not a multiple of 8), one row and row counts that are not
// multiples of anything.
std::vector<Shape> Shapes() {
  return {{1, 1000, 1000}, {7, 1000, 1008}, {3, 50304, 50304}, {33, 257, 257},
          {5, 1000, 1003}, {64, 4096, 4096}, {2, 9, 9}};
}

// Loss and lse within 1e-4 relative (plus 1e-4 absolute for losses near 0,
// where lse - x[t] cancels two O(|logit|) fp32 numbers). Gradients within
// one bf16 rounding of the float64 reference (Bf16Close: 2^-8 relative +
// 1e-5 absolute): the kernel rounds its fp32 result once.
TEST(CrossEntropyCuda, MatchesFloat64Reference) {
  KP_SKIP_WITHOUT_GPU();
  uint32_t seed = 100;
  for (const Shape& s : Shapes()) {
    for (const bool in_place : {false, true}) {
      for (const bool per_row_grad : {false, true}) {
        SCOPED_TRACE("rows " + std::to_string(s.rows) + " vocab " + std::to_string(s.vocab) +
                     " stride " + std::to_string(s.stride) + (in_place ? " in place" : "") +
                     (per_row_grad ? " per-row grad" : " scalar grad"));
        // Large magnitudes: the softmax is dominated by a few logits and a
        // naive exp would overflow fp32.
        const testing::Bf16Data x = RandomBf16(s.rows * s.stride, ++seed, 30.0f);
        const std::vector<int64_t> t = RandomTargets(s.rows, s.vocab, ++seed);
        const std::vector<float> g = RandomFloats(s.rows, ++seed);
        std::vector<float> compact;
        for (int64_t r = 0; r < s.rows; ++r) {
          compact.insert(compact.end(), x.values.begin() + r * s.stride,
                         x.values.begin() + r * s.stride + s.vocab);
        }
        DeviceBuffer dx(x.bits.size() * 2), dt(s.rows * 8), dg(s.rows * 4), dloss(s.rows * 4),
            dlse(s.rows * 4), dgrad(s.rows * s.stride * 2);
        ASSERT_TRUE(Upload(dx, x.bits) && Upload(dt, t) && Upload(dg, g) && dloss.get() &&
                    dlse.get() && dgrad.get());
        KP_CUDA_OK(CrossEntropyForward(dx.get(), s.stride, s.rows, s.vocab, dt.as<int64_t>(),
                                       dloss.as<float>(), dlse.as<float>(), nullptr));
        void* out = in_place ? dx.get() : dgrad.get();
        KP_CUDA_OK(CrossEntropyBackward(dx.get(), s.stride, s.rows, s.vocab, dt.as<int64_t>(),
                                        dlse.as<float>(), dg.as<float>(), per_row_grad ? 1 : 0,
                                        out, s.stride, nullptr));
        KP_CUDA_OK(cudaDeviceSynchronize());
        std::vector<double> want_loss(s.rows), want_lse(s.rows), want_grad(s.rows * s.vocab);
        CrossEntropyForwardReference(compact.data(), s.rows, s.vocab, t.data(), want_loss.data(),
                                     want_lse.data());
        CrossEntropyBackwardReference(compact.data(), s.rows, s.vocab, t.data(), g.data(),
                                      per_row_grad ? 1 : 0, want_grad.data());
        const std::vector<float> loss = Download<float>(dloss, s.rows);
        const std::vector<float> lse = Download<float>(dlse, s.rows);
        for (int64_t r = 0; r < s.rows; ++r) {
          EXPECT_NEAR(lse[r], want_lse[r], 1e-4 * std::abs(want_lse[r])) << r;
          EXPECT_NEAR(loss[r], want_loss[r], 1e-4 * (1 + std::abs(want_loss[r]))) << r;
        }
        const std::vector<float> grad_all =
            testing::ToFloat(Download<__nv_bfloat16>(in_place ? dx : dgrad, s.rows * s.stride));
        std::vector<float> got, want;
        for (int64_t r = 0; r < s.rows; ++r) {
          for (int64_t v = 0; v < s.vocab; ++v) {
            got.push_back(grad_all[r * s.stride + v]);
            want.push_back(static_cast<float>(want_grad[r * s.vocab + v]));
          }
          // Padding between rows is not the kernel's to touch.
          for (int64_t v = s.vocab; v < s.stride; ++v) {
            if (in_place) {
              ASSERT_EQ(grad_all[r * s.stride + v], x.values[r * s.stride + v]);
            }
          }
        }
        EXPECT_TRUE(Bf16Close(got, want, "grad"));
      }
    }
  }
}

TEST(CrossEntropyCuda, InvalidTargetGivesNanRowOnly) {
  KP_SKIP_WITHOUT_GPU();
  const int64_t rows = 4, vocab = 1000;
  const testing::Bf16Data x = RandomBf16(rows * vocab, 7, 3.0f);
  const std::vector<int64_t> t = {-1, 5, vocab, int64_t{1} << 40};
  const std::vector<float> g = {1.f};
  DeviceBuffer dx(rows * vocab * 2), dt(rows * 8), dg(4), dloss(rows * 4), dlse(rows * 4);
  ASSERT_TRUE(Upload(dx, x.bits) && Upload(dt, t) && Upload(dg, g) && dloss.get() && dlse.get());
  KP_CUDA_OK(CrossEntropyForward(dx.get(), vocab, rows, vocab, dt.as<int64_t>(),
                                 dloss.as<float>(), dlse.as<float>(), nullptr));
  KP_CUDA_OK(CrossEntropyBackward(dx.get(), vocab, rows, vocab, dt.as<int64_t>(),
                                  dlse.as<float>(), dg.as<float>(), 0, dx.get(), vocab, nullptr));
  KP_CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> loss = Download<float>(dloss, rows);
  EXPECT_TRUE(std::isnan(loss[0]));
  EXPECT_TRUE(std::isfinite(loss[1]));
  EXPECT_TRUE(std::isnan(loss[2]));
  EXPECT_TRUE(std::isnan(loss[3]));
  const std::vector<float> grad = testing::ToFloat(Download<__nv_bfloat16>(dx, rows * vocab));
  EXPECT_TRUE(std::isnan(grad[0]));
  EXPECT_TRUE(std::isfinite(grad[vocab + 3]));
  EXPECT_TRUE(std::isnan(grad[3 * vocab + vocab - 1]));
}

TEST(CrossEntropyCuda, RejectsBadArguments) {
  KP_SKIP_WITHOUT_GPU();
  DeviceBuffer buf(1024);
  EXPECT_EQ(CrossEntropyForward(buf.get(), 4, 1, 8, nullptr, nullptr, nullptr, nullptr),
            cudaErrorInvalidValue);
  // In place with different strides would race between rows.
  EXPECT_EQ(CrossEntropyBackward(buf.get(), 16, 1, 8, nullptr, nullptr, nullptr, 0, buf.get(), 8,
                                 nullptr),
            cudaErrorInvalidValue);
}

TEST(CrossEntropyCuda, Bandwidth) {
  KP_SKIP_WITHOUT_GPU();
  // The 1.3B model's loss: 16384 tokens x vocab 50304.
  const int64_t rows = 16384, vocab = 50304;
  const testing::Bf16Data x = RandomBf16(rows * vocab, 30, 3.0f);
  const std::vector<int64_t> t = RandomTargets(rows, vocab, 31);
  const std::vector<float> g = {1.f / rows};
  DeviceBuffer dx(rows * vocab * 2), dt(rows * 8), dg(4), dloss(rows * 4), dlse(rows * 4);
  ASSERT_TRUE(Upload(dx, x.bits) && Upload(dt, t) && Upload(dg, g) && dloss.get() && dlse.get());
  const double elems = static_cast<double>(rows) * vocab;
  const double fwd =
      testing::MeasureBandwidth("cross_entropy_forward 16384x50304", elems * 2, [&] {
        return CrossEntropyForward(dx.get(), vocab, rows, vocab, dt.as<int64_t>(),
                                   dloss.as<float>(), dlse.as<float>(), nullptr);
      });
  // In place, as the engine runs it; repeated runs keep the values finite
  // (gradients are small, and lse is recomputed from them by nobody).
  const double bwd =
      testing::MeasureBandwidth("cross_entropy_backward_in_place 16384x50304", elems * 4, [&] {
        return CrossEntropyBackward(dx.get(), vocab, rows, vocab, dt.as<int64_t>(),
                                    dlse.as<float>(), dg.as<float>(), 0, dx.get(), vocab,
                                    nullptr);
      });
  KP_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_GT(fwd, 1000.0);
  EXPECT_GT(bwd, 1000.0);
}

}  // namespace
}  // namespace kp::kernels
