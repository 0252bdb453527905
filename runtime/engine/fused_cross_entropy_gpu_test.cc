// The fused cross-entropy loss on the GPU (skips elsewhere):
// FusedCrossEntropySum against float64 ATen on the same bf16 logits, and
// ChunkedCrossEntropy with fused on vs off (the ATen path on fp32 copies of
// the logits), chunked and unchunked, through a Linear-like head.
//
// Tolerances: the loss within 1e-4 relative (both take the softmax in fp32
// on the same bf16 logits). The logits' gradient within one bf16 rounding of
// float64 (2^-8 relative + 1e-5 absolute per element: the kernel rounds its
// fp32 result once). Hidden and head-weight gradients (max-abs relative
// error, RelErr) within 1e-2 of the ATen path: both feed bf16 logit
// gradients to the same bf16 GEMMs; they differ by bf16 roundings only.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAFunctions.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "kernels/gpu_test_util.h"
#include "runtime/engine/fused_ops.h"
#include "runtime/engine/recompute.h"
#include "runtime/engine/test_util.h"

namespace kp::engine {
namespace {

using testing::RelErr;

#define KP_SKIP_WITHOUT_FUSED_KERNELS()                                            \
  do {                                                                             \
    KP_SKIP_WITHOUT_GPU();                                                         \
    if (!FusedKernelsApply(at::Device(at::kCUDA, 0), at::kBFloat16)) {             \
      GTEST_SKIP() << "the fused kernels are built for sm_90+; this GPU is older"; \
    }                                                                              \
  } while (0)

const at::Device kCuda(at::kCUDA, 0);

TEST(FusedCrossEntropySum, MatchesFloat64LossAndLogitGradient) {
  KP_SKIP_WITHOUT_FUSED_KERNELS();
  at::manual_seed(1);
  for (const int64_t vocab : {1000, 257, 50304}) {
    for (const int64_t rows : {1, 37}) {
      SCOPED_TRACE("rows " + std::to_string(rows) + " vocab " + std::to_string(vocab));
      const at::Tensor logits =
          (at::randn({rows, vocab}, at::TensorOptions(kCuda)) * 20).to(at::kBFloat16);
      const at::Tensor targets = at::randint(vocab, {rows}, at::TensorOptions(kCuda).dtype(at::kLong));
      const double upstream = 0.37;
      // float64 reference on the same bf16 values.
      const at::Tensor x64 = logits.to(at::kDouble).requires_grad_(true);
      const at::Tensor want_loss =
          at::cross_entropy_loss(x64, targets, {}, at::Reduction::Sum);
      const at::Tensor want_grad = torch::autograd::grad(
          {want_loss}, {x64}, {at::full({}, upstream, x64.options())})[0];
      // The fused function overwrites its input in backward: feed it a
      // non-leaf copy.
      const at::Tensor leaf = logits.clone().requires_grad_(true);
      const at::Tensor input = leaf * 1;
      const at::Tensor loss = FusedCrossEntropySum(input, targets);
      EXPECT_EQ(loss.scalar_type(), at::kFloat);
      EXPECT_EQ(loss.dim(), 0);
      const double got = loss.item<double>(), want = want_loss.item<double>();
      // Plus 1e-4 per row: a row whose target is its largest logit has a
      // loss near 0 that cancels two O(|logit|) fp32 numbers.
      EXPECT_NEAR(got, want, 1e-4 * (std::abs(want) + static_cast<double>(rows)));
      const at::Tensor grad = torch::autograd::grad(
          {loss}, {leaf}, {at::full({}, upstream, loss.options())})[0];
      EXPECT_EQ(grad.scalar_type(), at::kBFloat16);
      const at::Tensor err = (grad.to(at::kDouble) - want_grad).abs();
      const at::Tensor tol = want_grad.abs() * std::ldexp(1.0, -8) + 1e-5;
      EXPECT_TRUE((err <= tol).all().item<bool>())
          << "max err " << err.max().item<double>();
    }
  }
}

TEST(FusedCrossEntropySum, BackwardTwiceIsRefused) {
  KP_SKIP_WITHOUT_FUSED_KERNELS();
  // The child re-runs the binary instead of forking a process that has
  // initialized CUDA.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const at::Tensor leaf =
      at::randn({4, 64}, at::TensorOptions(kCuda).dtype(at::kBFloat16)).requires_grad_(true);
  const at::Tensor targets = at::randint(64, {4}, at::TensorOptions(kCuda).dtype(at::kLong));
  const at::Tensor loss = FusedCrossEntropySum(leaf * 1, targets);
  torch::autograd::grad({loss}, {leaf}, {}, /*retain_graph=*/true);
  EXPECT_DEATH(torch::autograd::grad({loss}, {leaf}, {}, true), "consumed");
}

TEST(FusedCrossEntropySum, TargetOutOfRangeGivesNanNotACrash) {
  KP_SKIP_WITHOUT_FUSED_KERNELS();
  const at::Tensor logits = at::randn({3, 100}, at::TensorOptions(kCuda).dtype(at::kBFloat16));
  const at::Tensor targets =
      at::tensor(std::vector<int64_t>{1, 100, -5}, at::TensorOptions().dtype(at::kLong)).to(kCuda);
  EXPECT_TRUE(std::isnan(FusedCrossEntropySum(logits, targets).item<double>()));
}

struct Head {
  at::Tensor weight;  // [V, d] bf16
  at::Tensor operator()(const at::Tensor& x) const { return at::matmul(x, weight.t()); }
};

// loss, d hidden, d weight of ChunkedCrossEntropy.
std::vector<at::Tensor> LossAndGrads(const at::Tensor& hidden0, const at::Tensor& weight0,
                                     const at::Tensor& targets, int64_t chunk, bool fused) {
  const at::Tensor hidden = hidden0.detach().requires_grad_(true);
  const at::Tensor weight = weight0.detach().requires_grad_(true);
  const Head head{weight};
  const at::Tensor loss = ChunkedCrossEntropy(hidden, targets, head, {weight}, chunk, fused);
  const auto grads = torch::autograd::grad({loss}, {hidden, weight});
  return {loss.detach(), grads[0], grads[1]};
}

TEST(FusedCrossEntropy, ChunkedLossMatchesAtenPath) {
  KP_SKIP_WITHOUT_FUSED_KERNELS();
  at::manual_seed(2);
  const int64_t n = 96, d = 64, vocab = 1000;
  const auto bf16 = at::TensorOptions(kCuda).dtype(at::kBFloat16);
  const at::Tensor hidden = at::randn({n, d}, bf16);
  const at::Tensor weight = at::randn({vocab, d}, bf16) * 0.5;
  const at::Tensor targets = at::randint(vocab, {n}, at::TensorOptions(kCuda).dtype(at::kLong));
  for (const int64_t chunk : {int64_t{32}, int64_t{40}, n}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    const auto aten = LossAndGrads(hidden, weight, targets, chunk, /*fused=*/false);
    const auto fused = LossAndGrads(hidden, weight, targets, chunk, /*fused=*/true);
    const double want = aten[0].item<double>();
    EXPECT_NEAR(fused[0].item<double>(), want, 1e-4 * std::abs(want));
    EXPECT_LT(RelErr(fused[1], aten[1]), 1e-2) << "d hidden";
    EXPECT_LT(RelErr(fused[2], aten[2]), 1e-2) << "d head weight";
  }
}

TEST(FusedCrossEntropy, Timing1p3bLoss) {
  KP_SKIP_WITHOUT_FUSED_KERNELS();
  // The 1.3B model's logits: 16384 tokens x vocab 50304, loss forward +
  // backward only (no head GEMM). Printed, not asserted.
  const int64_t n = 16384, vocab = 50304;
  const at::Tensor logits =
      (at::randn({n, vocab}, at::TensorOptions(kCuda)) * 3).to(at::kBFloat16);
  const at::Tensor targets = at::randint(vocab, {n}, at::TensorOptions(kCuda).dtype(at::kLong));
  // The fused backward overwrites its input with the gradient: it runs on a
  // copy whose values drift from iteration to iteration (they stay finite,
  // which is all a timing needs).
  const at::Tensor scratch = logits.clone();
  auto time_ms = [&](bool fused) {
    auto once = [&] {
      const at::Tensor leaf = (fused ? scratch : logits).detach().requires_grad_(true);
      // The leaf itself (no extra copy): the fused backward then writes the
      // gradient into scratch, which is what scratch is for.
      const at::Tensor& x = leaf;
      at::Tensor loss =
          fused ? FusedCrossEntropySum(x, targets)
                : at::cross_entropy_loss(x.to(at::kFloat), targets, {}, at::Reduction::Sum);
      return torch::autograd::grad({loss / static_cast<double>(n)}, {leaf})[0];
    };
    once();
    c10::cuda::device_synchronize();
    const auto start = std::chrono::steady_clock::now();
    const int iters = 5;
    for (int i = 0; i < iters; ++i) once();
    c10::cuda::device_synchronize();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
               .count() /
           iters;
  };
  const double aten_ms = time_ms(false);
  const double fused_ms = time_ms(true);
  std::printf("[timing] cross entropy fwd+bwd 16384x50304: ATen fp32 path %.2f ms, fused %.2f ms\n",
              aten_ms, fused_ms);
  EXPECT_LT(fused_ms, aten_ms);
}

}  // namespace
}  // namespace kp::engine
