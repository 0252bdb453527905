#include "runtime/parallel/lse_merge.h"

#include <limits>

#include <ATen/ATen.h>

#include "kernels/lse_merge_strided.h"
#include "runtime/parallel/current_stream.h"
#include "runtime/common/status.h"

namespace kp::parallel {
namespace {

bool UseFusedKernel(const MergeAccumulator& acc, const at::Tensor& blk_out,
                    const at::Tensor& blk_lse) {
  return acc.out.is_cuda() && blk_out.is_cuda() && blk_lse.is_cuda() &&
         acc.out.scalar_type() == at::kFloat && acc.lse.scalar_type() == at::kFloat &&
         (blk_out.scalar_type() == at::kFloat || blk_out.scalar_type() == at::kBFloat16) &&
         blk_lse.scalar_type() == at::kFloat && acc.out.stride(3) == 1 &&
         blk_out.stride(3) == 1 && blk_lse.dim() == 3;
}

kernels::Strides3 Strides(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

// One pass over the rows, whatever the block's memory order (cuDNN returns
// [B, T, H, D] order) and wherever the rows sit in the accumulator.
void MergeFused(MergeAccumulator& acc, int64_t row_offset, const at::Tensor& blk_out,
                const at::Tensor& blk_lse) {
  at::Tensor a = acc.out.narrow(2, row_offset, blk_out.size(2));
  at::Tensor a_lse = acc.lse.narrow(2, row_offset, blk_out.size(2));
  kernels::StridedMergeArgs args;
  args.batch = blk_out.size(0);
  args.heads = blk_out.size(1);
  args.rows = blk_out.size(2);
  args.dim = static_cast<int>(blk_out.size(3));
  args.acc = a.data_ptr<float>();
  args.acc_strides = Strides(a);
  args.acc_lse = a_lse.data_ptr<float>();
  args.acc_lse_strides = Strides(a_lse);
  args.blk = blk_out.data_ptr();
  args.blk_dtype =
      blk_out.scalar_type() == at::kFloat ? kernels::DType::kFloat32 : kernels::DType::kBFloat16;
  args.blk_strides = Strides(blk_out);
  args.blk_lse = blk_lse.data_ptr<float>();
  args.blk_lse_strides = Strides(blk_lse);
  const cudaError_t err = kernels::MergeAttentionBlockStrided(args, CurrentStream(acc.out));
  TORCH_CHECK(err == cudaSuccess, "MergeAttentionBlockStrided failed: ", cudaGetErrorString(err));
}

}  // namespace

MergeAccumulator MakeAccumulator(const at::Tensor& q) {
  const at::ScalarType dt = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::TensorOptions o = q.options().dtype(dt);
  return {at::zeros(q.sizes(), o),
          at::full({q.size(0), q.size(1), q.size(2)}, -std::numeric_limits<double>::infinity(), o)};
}

void MergeBlock(MergeAccumulator& acc, int64_t row_offset, const at::Tensor& blk_out,
                const at::Tensor& blk_lse, MergeMode mode) {
  const int64_t rows = blk_out.size(2);
  KP_CHECK(row_offset >= 0 && row_offset + rows <= acc.out.size(2));
  if (mode == MergeMode::kStable && UseFusedKernel(acc, blk_out, blk_lse)) {
    MergeFused(acc, row_offset, blk_out, blk_lse);
    return;
  }
  at::Tensor a = acc.out.narrow(2, row_offset, rows);
  at::Tensor a_lse = acc.lse.narrow(2, row_offset, rows);
  const at::Tensor b_lse = blk_lse.to(acc.lse.scalar_type());
  const at::Tensor hi = at::maximum(a_lse, b_lse);
  const at::Tensor lo = at::minimum(a_lse, b_lse);
  const at::Tensor empty = hi.isneginf();  // neither side saw a key yet
  // Where hi is -inf, lo - hi is NaN; those rows are replaced below.
  const at::Tensor lse = at::where(empty, hi, hi + at::log1p(at::exp(lo - hi)));
  at::Tensor keep = at::where(empty, at::ones_like(hi), at::exp(a_lse - lse));
  at::Tensor take = at::where(empty, at::zeros_like(hi), at::exp(b_lse - lse));
  if (mode == MergeMode::kBrokenForTesting) take = at::where(empty, take, at::exp(b_lse - hi));
  a.copy_(a * keep.unsqueeze(-1) + blk_out.to(a.scalar_type()) * take.unsqueeze(-1));
  a_lse.copy_(lse);
}

}  // namespace kp::parallel
