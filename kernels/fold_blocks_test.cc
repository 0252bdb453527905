// The block fold: its CPU reference against the one-block-at-a-time merge
// (lse_merge_strided's reference) and a float64 sum, folding in rounds against
// folding at once, and the CUDA kernel against the reference (skipped without
// a GPU) in both memory orders, both dtypes, the vectorised and scalar paths.
#include "kernels/fold_blocks.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/gpu_test_util.h"

namespace kp::kernels {
namespace {

constexpr int64_t kB = 2, kH = 3;

// A block of `rows` rows at `offset`, float32, in [B, H, rows, D] order or
// [B, rows, H, D] order (as cuDNN returns outputs).
struct HostBlock {
  int64_t offset = 0, rows = 0;
  bool bthd = false;
  std::vector<float> data, lse;
};

Strides3 DataStrides(const HostBlock& blk, int dim) {
  if (blk.bthd) return {blk.rows * kH * dim, dim, kH * dim};
  return {kH * blk.rows * dim, blk.rows * dim, dim};
}
Strides3 LseStrides(int64_t rows) { return {kH * rows, rows, 1}; }

HostBlock RandomBlock(std::mt19937& gen, int64_t offset, int64_t rows, bool bthd, int dim) {
  std::normal_distribution<float> val(0.f, 1.f);
  std::uniform_real_distribution<float> lse(-12.f, 12.f);
  HostBlock blk{offset, rows, bthd, {}, {}};
  blk.data.resize(kB * kH * rows * dim);
  blk.lse.resize(kB * kH * rows);
  for (float& x : blk.data) x = val(gen);
  for (float& x : blk.lse) x = lse(gen);
  blk.lse[0] = -INFINITY;  // a row of this block that saw no key
  return blk;
}

FoldBlock Ref(const HostBlock& blk, int dim, const void* data, const float* lse, DType dt) {
  FoldBlock f;
  f.data = data;
  f.dtype = dt;
  f.strides = DataStrides(blk, dim);
  f.lse = lse;
  f.lse_strides = LseStrides(blk.rows);
  f.row_offset = blk.offset;
  f.rows = blk.rows;
  return f;
}

FoldArgs Args(FoldKind kind, int64_t rows, int dim, void* out, DType out_dt, float* out_lse) {
  FoldArgs a;
  a.kind = kind;
  a.batch = kB;
  a.heads = kH;
  a.rows = rows;
  a.dim = dim;
  a.out = out;
  a.out_dtype = out_dt;
  a.out_strides = {kH * rows * dim, rows * dim, dim};
  a.out_lse = out_lse;
  a.out_lse_strides = LseStrides(rows);
  return a;
}

// Rows 0..11: blocks cover [0,8), [4,12), [2,6) and [8,12); rows 12..13 are
// covered by none.
constexpr int64_t kRows = 14;
std::vector<HostBlock> Blocks(uint32_t seed, int dim) {
  std::mt19937 gen(seed);
  return {RandomBlock(gen, 0, 8, false, dim), RandomBlock(gen, 4, 8, true, dim),
          RandomBlock(gen, 2, 4, true, dim), RandomBlock(gen, 8, 4, false, dim)};
}

TEST(FoldBlocksReference, LseMergeMatchesMergingOneBlockAtATime) {
  constexpr int kD = 24;
  const std::vector<HostBlock> blocks = Blocks(1, kD);
  std::vector<float> out(kB * kH * kRows * kD, 7.f), out_lse(kB * kH * kRows, 7.f);
  FoldArgs a = Args(FoldKind::kLseMerge, kRows, kD, out.data(), DType::kFloat32, out_lse.data());
  for (const HostBlock& blk : blocks) {
    a.blocks[a.num_blocks++] = Ref(blk, kD, blk.data.data(), blk.lse.data(), DType::kFloat32);
  }
  FoldBlocksReference(a);

  std::vector<float> acc(out.size(), 0.f), acc_lse(out_lse.size(), -INFINITY);
  for (const HostBlock& blk : blocks) {
    StridedMergeArgs m;
    m.batch = kB;
    m.heads = kH;
    m.rows = blk.rows;
    m.dim = kD;
    m.acc = acc.data() + blk.offset * kD;
    m.acc_strides = {kH * kRows * kD, kRows * kD, kD};
    m.acc_lse = acc_lse.data() + blk.offset;
    m.acc_lse_strides = LseStrides(kRows);
    m.blk = blk.data.data();
    m.blk_strides = DataStrides(blk, kD);
    m.blk_lse = blk.lse.data();
    m.blk_lse_strides = LseStrides(blk.rows);
    MergeAttentionBlockStridedReference(m);
  }
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_NEAR(out[i], acc[i], 1e-5 * (1 + std::fabs(acc[i]))) << "element " << i;
  }
  for (size_t i = 0; i < out_lse.size(); ++i) {
    if (std::isinf(acc_lse[i])) {
      EXPECT_EQ(out_lse[i], acc_lse[i]) << "row " << i;
    } else {
      EXPECT_NEAR(out_lse[i], acc_lse[i], 1e-5 * (1 + std::fabs(acc_lse[i]))) << "row " << i;
    }
  }
  // Uncovered rows: zeros, lse -inf.
  EXPECT_EQ(out[(kRows - 1) * kD], 0.f);
  EXPECT_TRUE(std::isinf(out_lse[kRows - 1]) && out_lse[kRows - 1] < 0);
}

TEST(FoldBlocksReference, SumMatchesFloat64AndRoundsFoldInPlace) {
  constexpr int kD = 16;
  const std::vector<HostBlock> blocks = Blocks(2, kD);
  const size_t n = kB * kH * kRows * kD;
  std::vector<double> want(n, 0.0);
  for (const HostBlock& blk : blocks) {
    const Strides3 s = DataStrides(blk, kD);
    for (int64_t b = 0; b < kB; ++b)
      for (int64_t h = 0; h < kH; ++h)
        for (int64_t t = 0; t < blk.rows; ++t)
          for (int i = 0; i < kD; ++i)
            want[((b * kH + h) * kRows + blk.offset + t) * kD + i] +=
                blk.data[b * s.b + h * s.h + t * s.t + i];
  }
  // Round 1 folds blocks 0-1 into out; round 2 folds out (in place) with 2-3.
  std::vector<float> out(n, 3.f);
  FoldArgs a = Args(FoldKind::kSum, kRows, kD, out.data(), DType::kFloat32, nullptr);
  for (int i = 0; i < 2; ++i) {
    a.blocks[a.num_blocks++] = Ref(blocks[i], kD, blocks[i].data.data(), nullptr, DType::kFloat32);
  }
  FoldBlocksReference(a);
  FoldArgs b = Args(FoldKind::kSum, kRows, kD, out.data(), DType::kFloat32, nullptr);
  b.blocks[b.num_blocks++] = {out.data(), DType::kFloat32, a.out_strides, nullptr, {}, 0, kRows};
  for (int i = 2; i < 4; ++i) {
    b.blocks[b.num_blocks++] = Ref(blocks[i], kD, blocks[i].data.data(), nullptr, DType::kFloat32);
  }
  FoldBlocksReference(b);
  for (size_t i = 0; i < n; ++i) ASSERT_NEAR(out[i], want[i], 1e-5) << "element " << i;
}

// ---- the CUDA kernel against the reference ----

uint16_t Bf16Bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  bits += 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}
float FromBf16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

template <typename T>
T* ToDevice(const std::vector<T>& host, std::vector<void*>& owned) {
  void* p = nullptr;
  if (cudaMalloc(&p, host.size() * sizeof(T) + 16) != cudaSuccess) return nullptr;
  cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  owned.push_back(p);
  return static_cast<T*>(p);
}

void CheckKernel(FoldKind kind, int dim, DType blk_dt, DType out_dt, bool in_place_round) {
  std::vector<HostBlock> blocks = Blocks(3 + dim, dim);
  std::vector<void*> owned;
  // Host copies of what the device sees (bf16 blocks rounded on both sides).
  std::vector<std::vector<uint16_t>> bf(blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (blk_dt == DType::kBFloat16) {
      for (float& x : blocks[i].data) {
        bf[i].push_back(Bf16Bits(x));
        x = FromBf16(bf[i].back());
      }
    }
  }
  const size_t n = kB * kH * kRows * dim;
  const bool lse = kind == FoldKind::kLseMerge;
  // Reference on the host.
  std::vector<float> ref_out(n), ref_lse(kB * kH * kRows);
  std::vector<uint16_t> ref_out_bf(n);
  {
    FoldArgs a = Args(kind, kRows, dim,
                      out_dt == DType::kFloat32 ? static_cast<void*>(ref_out.data())
                                                : static_cast<void*>(ref_out_bf.data()),
                      out_dt, lse ? ref_lse.data() : nullptr);
    for (size_t i = 0; i < blocks.size(); ++i) {
      a.blocks[a.num_blocks++] = Ref(blocks[i], dim, blocks[i].data.data(),
                                     lse ? blocks[i].lse.data() : nullptr, DType::kFloat32);
    }
    FoldBlocksReference(a);
  }
  // Device: all at once, or two rounds through a float32 partial.
  std::vector<float> zeros_out(n, 0.f), zeros_lse(kB * kH * kRows, 0.f);
  void* d_out = out_dt == DType::kFloat32
                    ? static_cast<void*>(ToDevice(zeros_out, owned))
                    : static_cast<void*>(ToDevice(std::vector<uint16_t>(n, 0), owned));
  float* d_lse = ToDevice(zeros_lse, owned);
  std::vector<FoldBlock> dev;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const void* data = blk_dt == DType::kFloat32
                           ? static_cast<const void*>(ToDevice(blocks[i].data, owned))
                           : static_cast<const void*>(ToDevice(bf[i], owned));
    dev.push_back(Ref(blocks[i], dim, data, ToDevice(blocks[i].lse, owned), blk_dt));
    if (!lse) dev.back().lse = nullptr;
  }
  if (!in_place_round) {
    FoldArgs a = Args(kind, kRows, dim, d_out, out_dt, lse ? d_lse : nullptr);
    for (const FoldBlock& f : dev) a.blocks[a.num_blocks++] = f;
    KP_CUDA_OK(FoldBlocks(a, nullptr));
  } else {
    float* partial = ToDevice(zeros_out, owned);
    float* partial_lse = ToDevice(zeros_lse, owned);
    FoldArgs a = Args(kind, kRows, dim, partial, DType::kFloat32, lse ? partial_lse : nullptr);
    a.blocks[a.num_blocks++] = dev[0];
    a.blocks[a.num_blocks++] = dev[1];
    KP_CUDA_OK(FoldBlocks(a, nullptr));
    FoldArgs b = Args(kind, kRows, dim, d_out, out_dt, lse ? d_lse : nullptr);
    b.blocks[b.num_blocks++] = {partial, DType::kFloat32, a.out_strides,
                                lse ? partial_lse : nullptr, a.out_lse_strides, 0, kRows};
    b.blocks[b.num_blocks++] = dev[2];
    b.blocks[b.num_blocks++] = dev[3];
    KP_CUDA_OK(FoldBlocks(b, nullptr));
  }
  KP_CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> got(n);
  if (out_dt == DType::kFloat32) {
    cudaMemcpy(got.data(), d_out, n * sizeof(float), cudaMemcpyDeviceToHost);
  } else {
    std::vector<uint16_t> bits(n);
    cudaMemcpy(bits.data(), d_out, n * sizeof(uint16_t), cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < n; ++i) got[i] = FromBf16(bits[i]);
    for (size_t i = 0; i < n; ++i) ref_out[i] = FromBf16(ref_out_bf[i]);
  }
  // fp32: expf/logf differ in the last ulps between host and device; bf16
  // outputs may round to neighbouring values from those.
  const double tol = out_dt == DType::kFloat32 ? 2e-6 : 8e-3;
  for (size_t i = 0; i < n; ++i) {
    ASSERT_NEAR(got[i], ref_out[i], tol * (1 + std::fabs(ref_out[i]))) << "element " << i;
  }
  if (lse) {
    std::vector<float> got_lse(ref_lse.size());
    cudaMemcpy(got_lse.data(), d_lse, got_lse.size() * sizeof(float), cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < got_lse.size(); ++i) {
      if (std::isinf(ref_lse[i])) {
        EXPECT_EQ(got_lse[i], ref_lse[i]) << "row " << i;
      } else {
        EXPECT_NEAR(got_lse[i], ref_lse[i], 2e-6 * (1 + std::fabs(ref_lse[i]))) << "row " << i;
      }
    }
  }
  for (void* p : owned) cudaFree(p);
}

TEST(FoldBlocksKernel, LseMergeBf16BlocksToBf16Vectorised) {
  KP_SKIP_WITHOUT_GPU();
  CheckKernel(FoldKind::kLseMerge, 128, DType::kBFloat16, DType::kBFloat16, false);
}

TEST(FoldBlocksKernel, LseMergeFp32ScalarPathInRounds) {
  KP_SKIP_WITHOUT_GPU();
  CheckKernel(FoldKind::kLseMerge, 40, DType::kFloat32, DType::kFloat32, true);
}

TEST(FoldBlocksKernel, SumBf16ToFp32InRounds) {
  KP_SKIP_WITHOUT_GPU();
  CheckKernel(FoldKind::kSum, 128, DType::kBFloat16, DType::kFloat32, true);
}

TEST(FoldBlocksKernel, SumBf16ToBf16) {
  KP_SKIP_WITHOUT_GPU();
  CheckKernel(FoldKind::kSum, 64, DType::kBFloat16, DType::kBFloat16, false);
}

}  // namespace
}  // namespace kp::kernels
