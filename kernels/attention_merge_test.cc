#include "kernels/attention_merge.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include "kernels/gpu_test_util.h"

namespace kp::kernels {
namespace {

struct Case {
  int64_t rows;
  int dim;
  std::vector<float> acc, acc_lse, blk, blk_lse;
};

// Random partial results; some rows fully masked on one side or both, and
// LSEs far apart, to exercise the stable form.
Case MakeCase(int64_t rows, int dim, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> val(0.f, 1.f);
  std::uniform_real_distribution<float> lse(-30.f, 30.f);
  Case c{rows, dim, {}, {}, {}, {}};
  c.acc.resize(rows * dim);
  c.blk.resize(rows * dim);
  for (auto& v : c.acc) v = val(gen);
  for (auto& v : c.blk) v = val(gen);
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < rows; ++r) {
    c.acc_lse.push_back(r % 17 == 3 || r % 31 == 5 ? -inf : lse(gen));
    c.blk_lse.push_back(r % 13 == 7 || r % 31 == 5 ? -inf : lse(gen));
  }
  return c;
}

// float64 evaluation of the textbook formula.
void Float64Merge(const Case& c, std::vector<double>& out, std::vector<double>& out_lse) {
  out.assign(c.rows * c.dim, 0.0);
  out_lse.assign(c.rows, 0.0);
  for (int64_t r = 0; r < c.rows; ++r) {
    const double a = c.acc_lse[r], b = c.blk_lse[r];
    if (std::isinf(a) && std::isinf(b)) {
      out_lse[r] = a;
      for (int i = 0; i < c.dim; ++i) out[r * c.dim + i] = c.acc[r * c.dim + i];
      continue;
    }
    const double m = std::max(a, b);
    const double l = m + std::log(std::exp(a - m) + std::exp(b - m));
    out_lse[r] = l;
    for (int i = 0; i < c.dim; ++i) {
      out[r * c.dim + i] =
          std::exp(a - l) * c.acc[r * c.dim + i] + std::exp(b - l) * c.blk[r * c.dim + i];
    }
  }
}

TEST(AttentionMergeReference, MatchesFloat64) {
  Case c = MakeCase(1000, 64, 1);
  std::vector<double> want, want_lse;
  Float64Merge(c, want, want_lse);
  MergeAttentionBlockReference(c.acc.data(), c.acc_lse.data(), c.dim, c.blk.data(),
                               c.blk_lse.data(), c.dim, c.rows, c.dim);
  for (int64_t r = 0; r < c.rows; ++r) {
    if (std::isinf(want_lse[r])) {
      EXPECT_TRUE(std::isinf(c.acc_lse[r]) && c.acc_lse[r] < 0);
    } else {
      EXPECT_NEAR(c.acc_lse[r], want_lse[r], 1e-5 * (1 + std::abs(want_lse[r])));
    }
    for (int i = 0; i < c.dim; ++i) {
      ASSERT_NEAR(c.acc[r * c.dim + i], want[r * c.dim + i], 1e-5) << "row " << r;
    }
  }
}

TEST(AttentionMergeReference, MergingIsOrderIndependent) {
  // Folding blocks A then B equals B then A: the ring visits blocks in a
  // rank-dependent order, so this must hold for CP results to agree.
  Case c = MakeCase(64, 32, 2);
  Case d = MakeCase(64, 32, 3);
  std::vector<float> x = c.acc, xl = c.acc_lse;
  MergeAttentionBlockReference(x.data(), xl.data(), 32, c.blk.data(), c.blk_lse.data(), 32, 64, 32);
  MergeAttentionBlockReference(x.data(), xl.data(), 32, d.blk.data(), d.blk_lse.data(), 32, 64, 32);
  std::vector<float> y = c.acc, yl = c.acc_lse;
  MergeAttentionBlockReference(y.data(), yl.data(), 32, d.blk.data(), d.blk_lse.data(), 32, 64, 32);
  MergeAttentionBlockReference(y.data(), yl.data(), 32, c.blk.data(), c.blk_lse.data(), 32, 64, 32);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], y[i], 1e-5);
}

template <typename T>
T* ToDevice(const std::vector<T>& v) {
  T* p = nullptr;
  if (cudaMalloc(reinterpret_cast<void**>(&p), v.size() * sizeof(T)) != cudaSuccess) return nullptr;
  cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  return p;
}

TEST(AttentionMergeCuda, Float32MatchesReference) {
  KP_SKIP_WITHOUT_GPU();
  Case c = MakeCase(50000, 128, 4);
  float *acc = ToDevice(c.acc), *acc_lse = ToDevice(c.acc_lse), *blk = ToDevice(c.blk),
        *blk_lse = ToDevice(c.blk_lse);
  ASSERT_TRUE(acc && acc_lse && blk && blk_lse);
  KP_CUDA_OK(MergeAttentionBlock(acc, acc_lse, c.dim, blk, DType::kFloat32, blk_lse, c.dim, c.rows,
                                 c.dim, nullptr));
  KP_CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> got(c.acc.size()), got_lse(c.rows);
  cudaMemcpy(got.data(), acc, got.size() * 4, cudaMemcpyDeviceToHost);
  cudaMemcpy(got_lse.data(), acc_lse, got_lse.size() * 4, cudaMemcpyDeviceToHost);
  MergeAttentionBlockReference(c.acc.data(), c.acc_lse.data(), c.dim, c.blk.data(),
                               c.blk_lse.data(), c.dim, c.rows, c.dim);
  for (size_t i = 0; i < got.size(); ++i) {
    // GPU expf and fused multiply-adds round differently from the host: allow
    // ~32 float32 ulps relative to the value's magnitude.
    ASSERT_NEAR(got[i], c.acc[i], 4e-6 * std::max(1.0f, std::abs(c.acc[i]))) << i;
  }
  for (int64_t r = 0; r < c.rows; ++r) {
    if (std::isinf(c.acc_lse[r])) {
      ASSERT_TRUE(std::isinf(got_lse[r]));
    } else {
      ASSERT_NEAR(got_lse[r], c.acc_lse[r], 1e-5 * (1 + std::abs(c.acc_lse[r])));
    }
  }
  cudaFree(acc), cudaFree(acc_lse), cudaFree(blk), cudaFree(blk_lse);
}

TEST(AttentionMergeCuda, BFloat16BlockMatchesReference) {
  KP_SKIP_WITHOUT_GPU();
  Case c = MakeCase(4096, 96, 5);
  std::vector<__nv_bfloat16> blk16(c.blk.size());
  for (size_t i = 0; i < c.blk.size(); ++i) {
    blk16[i] = __float2bfloat16(c.blk[i]);
    c.blk[i] = __bfloat162float(blk16[i]);  // the reference sees the rounded values
  }
  float *acc = ToDevice(c.acc), *acc_lse = ToDevice(c.acc_lse), *blk_lse = ToDevice(c.blk_lse);
  __nv_bfloat16* blk = ToDevice(blk16);
  ASSERT_TRUE(acc && acc_lse && blk && blk_lse);
  KP_CUDA_OK(MergeAttentionBlock(acc, acc_lse, c.dim, blk, DType::kBFloat16, blk_lse, c.dim,
                                 c.rows, c.dim, nullptr));
  KP_CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> got(c.acc.size());
  cudaMemcpy(got.data(), acc, got.size() * 4, cudaMemcpyDeviceToHost);
  MergeAttentionBlockReference(c.acc.data(), c.acc_lse.data(), c.dim, c.blk.data(),
                               c.blk_lse.data(), c.dim, c.rows, c.dim);
  for (size_t i = 0; i < got.size(); ++i) {
    // GPU expf and fused multiply-adds round differently from the host: allow
    // ~32 float32 ulps relative to the value's magnitude.
    ASSERT_NEAR(got[i], c.acc[i], 4e-6 * std::max(1.0f, std::abs(c.acc[i]))) << i;
  }
  cudaFree(acc), cudaFree(acc_lse), cudaFree(blk), cudaFree(blk_lse);
}

}  // namespace
}  // namespace kp::kernels
