// The strided merge: its CPU reference against the dense reference on
// gathered copies (a narrowed accumulator, a block in [B, T, H, D] order), and
// the CUDA kernel against the CPU reference (skipped without a GPU).
#include "kernels/lse_merge_strided.h"

#include <cmath>
#include <random>
#include <vector>

#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include "kernels/gpu_test_util.h"

namespace kp::kernels {
namespace {

constexpr int64_t kB = 2, kH = 3, kT = 10, kRows = 4, kOffset = 5;
constexpr int kD = 40;

struct Case {
  // acc: [B, H, T, D] contiguous, merging rows [kOffset, kOffset + kRows);
  // blk: [B, rows, H, D] memory order (a transposed view); lse [B, H, T] / [B, H, rows].
  std::vector<float> acc, acc_lse, blk, blk_lse;
};

Case Make(uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> val(0.f, 1.f);
  std::uniform_real_distribution<float> lse(-20.f, 20.f);
  Case c;
  c.acc.resize(kB * kH * kT * kD);
  c.acc_lse.resize(kB * kH * kT);
  c.blk.resize(kB * kRows * kH * kD);
  c.blk_lse.resize(kB * kH * kRows);
  for (float& x : c.acc) x = val(gen);
  for (float& x : c.acc_lse) x = lse(gen);
  for (float& x : c.blk) x = val(gen);
  for (float& x : c.blk_lse) x = lse(gen);
  c.acc_lse[kOffset] = -INFINITY;      // b0 h0 first merged row: empty accumulator
  c.blk_lse[1] = -INFINITY;            // a fully masked block row
  c.acc_lse[kOffset + 2] = -INFINITY;  // both empty
  c.blk_lse[2] = -INFINITY;
  return c;
}

StridedMergeArgs Args(float* acc, float* acc_lse, const void* blk, DType dt,
                      const float* blk_lse) {
  StridedMergeArgs a;
  a.batch = kB;
  a.heads = kH;
  a.rows = kRows;
  a.dim = kD;
  a.acc = acc + kOffset * kD;
  a.acc_strides = {kH * kT * kD, kT * kD, kD};
  a.acc_lse = acc_lse + kOffset;
  a.acc_lse_strides = {kH * kT, kT, 1};
  a.blk = blk;
  a.blk_dtype = dt;
  a.blk_strides = {kRows * kH * kD, kD, kH * kD};
  a.blk_lse = blk_lse;
  a.blk_lse_strides = {kH * kRows, kRows, 1};
  return a;
}

TEST(LseMergeStrided, ReferenceMatchesDenseMergeOnGatheredRows) {
  Case c = Make(1);
  std::vector<float> acc = c.acc, acc_lse = c.acc_lse;
  MergeAttentionBlockStridedReference(Args(acc.data(), acc_lse.data(), c.blk.data(),
                                           DType::kFloat32, c.blk_lse.data()));
  // Dense: gather the rows, merge with the existing contiguous reference.
  const int64_t n = kB * kH * kRows;
  std::vector<float> dacc(n * kD), dlse(n), dblk(n * kD), dblse(n);
  for (int64_t b = 0; b < kB; ++b) {
    for (int64_t h = 0; h < kH; ++h) {
      for (int64_t t = 0; t < kRows; ++t) {
        const int64_t r = (b * kH + h) * kRows + t;
        for (int i = 0; i < kD; ++i) {
          dacc[r * kD + i] = c.acc[((b * kH + h) * kT + kOffset + t) * kD + i];
          dblk[r * kD + i] = c.blk[((b * kRows + t) * kH + h) * kD + i];
        }
        dlse[r] = c.acc_lse[(b * kH + h) * kT + kOffset + t];
        dblse[r] = c.blk_lse[(b * kH + h) * kRows + t];
      }
    }
  }
  MergeAttentionBlockReference(dacc.data(), dlse.data(), kD, dblk.data(), dblse.data(), kD, n,
                               kD);
  for (int64_t b = 0; b < kB; ++b) {
    for (int64_t h = 0; h < kH; ++h) {
      for (int64_t t = 0; t < kT; ++t) {
        const bool merged = t >= kOffset && t < kOffset + kRows;
        const int64_t r = (b * kH + h) * kRows + (t - kOffset);
        const float want_lse = merged ? dlse[r] : c.acc_lse[(b * kH + h) * kT + t];
        const float got_lse = acc_lse[(b * kH + h) * kT + t];
        if (std::isinf(want_lse)) {
          EXPECT_TRUE(std::isinf(got_lse));
        } else {
          EXPECT_FLOAT_EQ(got_lse, want_lse);
        }
        for (int i = 0; i < kD; ++i) {
          const float want = merged ? dacc[r * kD + i] : c.acc[((b * kH + h) * kT + t) * kD + i];
          EXPECT_FLOAT_EQ(acc[((b * kH + h) * kT + t) * kD + i], want);
        }
      }
    }
  }
}

template <typename T>
T* ToDevice(const std::vector<T>& v) {
  T* p = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&p), v.size() * sizeof(T));
  cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  return p;
}

TEST(LseMergeStrided, CudaKernelMatchesReference) {
  KP_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::kFloat32, DType::kBFloat16}) {
    Case c = Make(2);
    std::vector<__nv_bfloat16> blk16(c.blk.size());
    for (size_t i = 0; i < c.blk.size(); ++i) {
      blk16[i] = __float2bfloat16(c.blk[i]);
      if (dt == DType::kBFloat16) c.blk[i] = __bfloat162float(blk16[i]);  // same inputs
    }
    std::vector<float> acc = c.acc, acc_lse = c.acc_lse;
    MergeAttentionBlockStridedReference(Args(acc.data(), acc_lse.data(), c.blk.data(),
                                             DType::kFloat32, c.blk_lse.data()));
    float* d_acc = ToDevice(c.acc);
    float* d_acc_lse = ToDevice(c.acc_lse);
    float* d_blk_lse = ToDevice(c.blk_lse);
    void* d_blk = dt == DType::kFloat32 ? static_cast<void*>(ToDevice(c.blk))
                                        : static_cast<void*>(ToDevice(blk16));
    KP_CUDA_OK(MergeAttentionBlockStrided(Args(d_acc, d_acc_lse, d_blk, dt, d_blk_lse), nullptr));
    KP_CUDA_OK(cudaDeviceSynchronize());
    std::vector<float> got(acc.size()), got_lse(acc_lse.size());
    cudaMemcpy(got.data(), d_acc, got.size() * sizeof(float), cudaMemcpyDeviceToHost);
    cudaMemcpy(got_lse.data(), d_acc_lse, got_lse.size() * sizeof(float), cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], acc[i], 1e-5) << i;
    for (size_t i = 0; i < got_lse.size(); ++i) {
      if (std::isinf(acc_lse[i])) {
        EXPECT_TRUE(std::isinf(got_lse[i]));
      } else {
        EXPECT_NEAR(got_lse[i], acc_lse[i], 1e-5);
      }
    }
    cudaFree(d_acc);
    cudaFree(d_acc_lse);
    cudaFree(d_blk_lse);
    cudaFree(d_blk);
  }
}

}  // namespace
}  // namespace kp::kernels
