#include <algorithm>
#include <cmath>

#include <cuda_bf16.h>

#include "kernels/bf16_vec.cuh"
#include "kernels/cross_entropy.h"

namespace kp::kernels {
namespace {

using bf16 = __nv_bfloat16;

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kThreads = 256;
// Vectors each thread has in flight per loop iteration: 16-byte loads of one
// thread are issued together before any math, for memory-level parallelism.
constexpr int kUnroll = 2;

// Merges the running (max, sum of exp(x - max)) pair (m2, s2) into (m, s).
__device__ __forceinline__ void Combine(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) return;  // both empty: keep (-inf, 0), avoid inf - inf
  s = s * exp2f((m - mx) * kLog2e) + s2 * exp2f((m2 - mx) * kLog2e);
  m = mx;
}

// Adds kVec values to the running pair, rescaling the sum at most once.
template <int kVec>
__device__ __forceinline__ void Accumulate(const float (&x)[kVec], float& m, float& s) {
  float lm = x[0];
#pragma unroll
  for (int i = 1; i < kVec; ++i) lm = fmaxf(lm, x[i]);
  if (lm > m) {
    s *= exp2f((m - lm) * kLog2e);  // m == -inf: s was 0 and stays 0
    m = lm;
  }
  // m == -inf only when every value so far is -inf: they add exp2(-inf) = 0.
  // A NaN logit never wins fmaxf but makes s NaN here, so lse is NaN.
  const float neg = m == -INFINITY ? 0.f : -m * kLog2e;
#pragma unroll
  for (int i = 0; i < kVec; ++i) s += exp2f(fmaf(x[i], kLog2e, neg));
}

template <int kVec>
__global__ void __launch_bounds__(kThreads)
    CrossEntropyForwardKernel(const bf16* __restrict__ logits, int64_t ld, int64_t rows,
                              int64_t vocab, const int64_t* __restrict__ targets,
                              float* __restrict__ loss, float* __restrict__ lse) {
  __shared__ float shared_m[kThreads / 32], shared_s[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const bf16* row = logits + r * ld;
    float m = -INFINITY, s = 0.f;
    constexpr int64_t kStep = static_cast<int64_t>(kThreads) * kVec;
    int64_t c = static_cast<int64_t>(threadIdx.x) * kVec;
    for (; c + kStep < vocab; c += kUnroll * kStep) {
      float a[kVec], b[kVec];
      LoadBf16<kVec>(row + c, a);
      LoadBf16<kVec>(row + c + kStep, b);
      Accumulate<kVec>(a, m, s);
      Accumulate<kVec>(b, m, s);
    }
    if (c < vocab) {
      float a[kVec];
      LoadBf16<kVec>(row + c, a);
      Accumulate<kVec>(a, m, s);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
      const float s2 = __shfl_xor_sync(0xffffffffu, s, off);
      Combine(m, s, m2, s2);
    }
    if (lane == 0) {
      shared_m[warp] = m;
      shared_s[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
      m = lane < kThreads / 32 ? shared_m[lane] : -INFINITY;
      s = lane < kThreads / 32 ? shared_s[lane] : 0.f;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
        const float s2 = __shfl_xor_sync(0xffffffffu, s, off);
        Combine(m, s, m2, s2);
      }
      if (lane == 0) {
        const float l = m + logf(s);
        const int64_t t = targets[r];
        lse[r] = l;
        loss[r] = t >= 0 && t < vocab ? l - __bfloat162float(row[t]) : NAN;
      }
    }
    __syncthreads();  // shared_m/shared_s are reused by the next row
  }
}

template <int kVec>
__device__ __forceinline__ void GradVector(float (&x)[kVec], int64_t c, int64_t t, float l2,
                                           float g) {
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const float p = exp2f(fmaf(x[i], kLog2e, -l2));
    x[i] = (p - (c + i == t ? 1.f : 0.f)) * g;
  }
}

// No __restrict__ on logits/grad: they may be the same buffer. Each element
// is read and written by one thread, read first.
template <int kVec>
__global__ void __launch_bounds__(kThreads)
    CrossEntropyBackwardKernel(const bf16* logits, int64_t ld, int64_t rows, int64_t vocab,
                               const int64_t* __restrict__ targets, const float* __restrict__ lse,
                               const float* __restrict__ grad_row, int64_t grad_row_stride,
                               bf16* grad, int64_t ld_grad) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const bf16* row = logits + r * ld;
    bf16* out = grad + r * ld_grad;
    const int64_t t = targets[r];
    const float l2 = lse[r] * kLog2e;
    // An invalid target poisons its row: NaN gradients, like its NaN loss.
    const float g = t >= 0 && t < vocab ? grad_row[r * grad_row_stride] : NAN;
    constexpr int64_t kStep = static_cast<int64_t>(kThreads) * kVec;
    int64_t c = static_cast<int64_t>(threadIdx.x) * kVec;
    for (; c + kStep < vocab; c += kUnroll * kStep) {
      float a[kVec], b[kVec];
      LoadBf16<kVec>(row + c, a);
      LoadBf16<kVec>(row + c + kStep, b);
      GradVector<kVec>(a, c, t, l2, g);
      GradVector<kVec>(b, c + kStep, t, l2, g);
      StoreBf16<kVec>(out + c, a);
      StoreBf16<kVec>(out + c + kStep, b);
    }
    if (c < vocab) {
      float a[kVec];
      LoadBf16<kVec>(row + c, a);
      GradVector<kVec>(a, c, t, l2, g);
      StoreBf16<kVec>(out + c, a);
    }
  }
}

unsigned Blocks(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>(rows, int64_t{1} << 30));
}

}  // namespace

cudaError_t CrossEntropyForward(const void* logits, int64_t logits_stride, int64_t rows,
                                int64_t vocab, const int64_t* targets, float* loss, float* lse,
                                cudaStream_t stream) {
  if (rows < 0 || vocab <= 0 || logits_stride < vocab) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const bool vec = vocab % 8 == 0 && logits_stride % 8 == 0 && Aligned16(logits);
  const auto* x = static_cast<const bf16*>(logits);
  if (vec) {
    CrossEntropyForwardKernel<8>
        <<<Blocks(rows), kThreads, 0, stream>>>(x, logits_stride, rows, vocab, targets, loss, lse);
  } else {
    CrossEntropyForwardKernel<1>
        <<<Blocks(rows), kThreads, 0, stream>>>(x, logits_stride, rows, vocab, targets, loss, lse);
  }
  return cudaGetLastError();
}

cudaError_t CrossEntropyBackward(const void* logits, int64_t logits_stride, int64_t rows,
                                 int64_t vocab, const int64_t* targets, const float* lse,
                                 const float* grad_row, int64_t grad_row_stride, void* grad,
                                 int64_t grad_stride, cudaStream_t stream) {
  if (rows < 0 || vocab <= 0 || logits_stride < vocab || grad_stride < vocab ||
      grad_row_stride < 0) {
    return cudaErrorInvalidValue;
  }
  // In place only row for row: otherwise a thread could overwrite logits
  // another thread has not read yet.
  if (grad == logits && grad_stride != logits_stride) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const bool vec = vocab % 8 == 0 && logits_stride % 8 == 0 && grad_stride % 8 == 0 &&
                   Aligned16(logits) && Aligned16(grad);
  const auto* x = static_cast<const bf16*>(logits);
  auto* o = static_cast<bf16*>(grad);
  if (vec) {
    CrossEntropyBackwardKernel<8><<<Blocks(rows), kThreads, 0, stream>>>(
        x, logits_stride, rows, vocab, targets, lse, grad_row, grad_row_stride, o, grad_stride);
  } else {
    CrossEntropyBackwardKernel<1><<<Blocks(rows), kThreads, 0, stream>>>(
        x, logits_stride, rows, vocab, targets, lse, grad_row, grad_row_stride, o, grad_stride);
  }
  return cudaGetLastError();
}

}  // namespace kp::kernels
