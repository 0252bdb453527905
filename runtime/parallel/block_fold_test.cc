// BlockFolder: folding many blocks (more than one kernel launch takes, so in
// rounds) against float64 references built block by block, on CPU (the ATen
// path) and, where there is a GPU, on CUDA bf16 blocks (the kernel path).
#include "runtime/parallel/block_fold.h"

#include <cmath>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "kernels/fold_blocks.h"
#include "kernels/gpu_test_util.h"

namespace kp::parallel {
namespace {

constexpr int64_t kB = 2, kH = 3, kT = 24, kD = 32;

struct Blocks {
  std::vector<int64_t> offsets;
  std::vector<at::Tensor> data, lse;  // float64 on the CPU
};

// More blocks than one fold takes, of varied lengths and offsets, some rows
// covered by none; a few lse rows -inf.
Blocks MakeBlocks(int count) {
  at::manual_seed(7);
  Blocks b;
  for (int i = 0; i < count; ++i) {
    const int64_t off = (i * 5) % 17, rows = 1 + (i * 3) % 7;
    b.offsets.push_back(off);
    b.data.push_back(at::randn({kB, kH, rows, kD}, at::kDouble));
    at::Tensor l = at::rand({kB, kH, rows}, at::kDouble) * 20 - 10;
    if (i % 4 == 0) l[0][0][0] = -std::numeric_limits<double>::infinity();
    b.lse.push_back(l);
  }
  return b;
}

at::Tensor ReferenceSum(const Blocks& b) {
  at::Tensor acc = at::zeros({kB, kH, kT, kD}, at::kDouble);
  for (size_t i = 0; i < b.data.size(); ++i) acc.narrow(2, b.offsets[i], b.data[i].size(2)).add_(b.data[i]);
  return acc;
}

std::pair<at::Tensor, at::Tensor> ReferenceMerge(const Blocks& b) {
  // lse = log sum exp over the blocks covering each row; out = sum w_i o_i.
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> lses(kB * kH * kT);
  for (size_t i = 0; i < b.data.size(); ++i) {
    auto l = b.lse[i].accessor<double, 3>();
    for (int64_t x = 0; x < kB; ++x)
      for (int64_t h = 0; h < kH; ++h)
        for (int64_t t = 0; t < b.data[i].size(2); ++t)
          lses[(x * kH + h) * kT + b.offsets[i] + t].push_back(l[x][h][t]);
  }
  at::Tensor lse = at::full({kB, kH, kT}, -inf, at::kDouble);
  auto la = lse.accessor<double, 3>();
  for (int64_t x = 0; x < kB; ++x)
    for (int64_t h = 0; h < kH; ++h)
      for (int64_t t = 0; t < kT; ++t) {
        double s = 0;
        for (double v : lses[(x * kH + h) * kT + t]) s += std::exp(v);
        la[x][h][t] = s > 0 ? std::log(s) : -inf;
      }
  at::Tensor out = at::zeros({kB, kH, kT, kD}, at::kDouble);
  for (size_t i = 0; i < b.data.size(); ++i) {
    const at::Tensor row_lse = lse.narrow(2, b.offsets[i], b.data[i].size(2));
    const at::Tensor w = at::where(b.lse[i].isneginf(), at::zeros_like(row_lse),
                                   at::exp(b.lse[i] - row_lse));
    out.narrow(2, b.offsets[i], b.data[i].size(2)).add_(b.data[i] * w.unsqueeze(-1));
  }
  return {out, lse};
}

TEST(BlockFolder, SumsManyBlocksInRoundsOnCpu) {
  const Blocks b = MakeBlocks(3 * kernels::kMaxFoldBlocks);
  const at::Tensor like = at::empty({kB, kH, kT, kD}, at::kFloat);
  BlockFolder f(BlockFolder::Kind::kSum, like);
  for (size_t i = 0; i < b.data.size(); ++i) f.Add(b.offsets[i], b.data[i].to(at::kFloat));
  const at::Tensor got = f.Finish(at::kFloat).first;
  EXPECT_TRUE(at::allclose(got.to(at::kDouble), ReferenceSum(b), 1e-5, 1e-5));
}

TEST(BlockFolder, MergesManyBlocksInRoundsOnCpu) {
  const Blocks b = MakeBlocks(2 * kernels::kMaxFoldBlocks + 3);
  const at::Tensor like = at::empty({kB, kH, kT, kD}, at::kFloat);
  BlockFolder f(BlockFolder::Kind::kLseMerge, like);
  for (size_t i = 0; i < b.data.size(); ++i) {
    f.Add(b.offsets[i], b.data[i].to(at::kFloat), b.lse[i].to(at::kFloat));
  }
  auto [out, lse] = f.Finish(at::kFloat);
  auto [want_out, want_lse] = ReferenceMerge(b);
  EXPECT_TRUE(at::allclose(out.to(at::kDouble), want_out, 1e-5, 1e-5));
  // Uncovered rows: -inf on both sides.
  EXPECT_TRUE(at::equal(lse.isneginf(), want_lse.isneginf()));
  const at::Tensor finite = want_lse.isfinite();
  EXPECT_TRUE(at::allclose(lse.to(at::kDouble).masked_select(finite), want_lse.masked_select(finite),
                           1e-5, 1e-5));
}

TEST(BlockFolder, FinishIntoAddsToAnAccumulatorInPlaceOrRoundsToAnotherDtype) {
  const Blocks b = MakeBlocks(5);
  const at::Tensor like = at::empty({kB, kH, kT, kD}, at::kFloat);
  const at::Tensor base = at::randn({kB, kH, kT, kD}, at::kFloat);
  const at::Tensor want = ReferenceSum(b) + base.to(at::kDouble);

  at::Tensor acc = base.clone();
  BlockFolder in_place(BlockFolder::Kind::kSum, like);
  for (size_t i = 0; i < b.data.size(); ++i) in_place.Add(b.offsets[i], b.data[i].to(at::kFloat));
  in_place.FinishInto(acc, acc);
  EXPECT_TRUE(at::allclose(acc.to(at::kDouble), want, 1e-5, 1e-5));

  at::Tensor rounded = at::empty({kB, kH, kT, kD}, at::kBFloat16);
  BlockFolder to_bf16(BlockFolder::Kind::kSum, like);
  for (size_t i = 0; i < b.data.size(); ++i) to_bf16.Add(b.offsets[i], b.data[i].to(at::kFloat));
  to_bf16.FinishInto(rounded, base);
  EXPECT_TRUE(at::allclose(rounded.to(at::kDouble), want, 1e-2, 1e-2));
}

TEST(BlockFolder, KernelPathMatchesFloat64OnGpu) {
  KP_SKIP_WITHOUT_GPU();
  const Blocks b = MakeBlocks(2 * kernels::kMaxFoldBlocks + 3);
  const at::TensorOptions cuda = at::TensorOptions().device(at::kCUDA);
  const at::Tensor like = at::empty({kB, kH, kT, kD}, cuda.dtype(at::kBFloat16));
  BlockFolder sum(BlockFolder::Kind::kSum, like), merge(BlockFolder::Kind::kLseMerge, like);
  Blocks rounded = b;  // what the bf16 blocks hold, for the reference
  for (size_t i = 0; i < b.data.size(); ++i) {
    // cuDNN's [B, T, H, D] memory order for the odd blocks.
    at::Tensor d = b.data[i].to(cuda.dtype(at::kBFloat16));
    if (i % 2) d = d.transpose(1, 2).contiguous().transpose(1, 2);
    rounded.data[i] = d.to(at::kCPU).to(at::kDouble);
    sum.Add(b.offsets[i], d);
    merge.Add(b.offsets[i], d, b.lse[i].to(cuda.dtype(at::kFloat)));
  }
  const at::Tensor s = sum.Finish(at::kBFloat16).first;
  EXPECT_TRUE(at::allclose(s.to(at::kCPU).to(at::kDouble), ReferenceSum(rounded), 2e-2, 2e-2));
  auto [out, lse] = merge.Finish(at::kBFloat16);
  auto [want_out, want_lse] = ReferenceMerge(rounded);
  EXPECT_TRUE(at::allclose(out.to(at::kCPU).to(at::kDouble), want_out, 1e-2, 1e-2));
  const at::Tensor finite = want_lse.isfinite();
  EXPECT_TRUE(at::allclose(lse.to(at::kCPU).to(at::kDouble).masked_select(finite),
                           want_lse.masked_select(finite), 1e-5, 1e-5));
}

}  // namespace
}  // namespace kp::parallel
