#include "runtime/parallel/lse_merge.h"

#include <limits>

#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "kernels/attention_merge.h"
#include "runtime/common/status.h"

namespace kp::parallel {
namespace {

// The current CUDA stream through c10's device-generic interface, so this
// library links libtorch_cpu only: libtorch_cuda exports a bundled copy of
// gloo's symbols that would interpose on Debian's libgloo in any binary that
// also links the Gloo communicator (seen: broken gloo rendezvous).
cudaStream_t CurrentStream(const at::Tensor& t) {
  const c10::impl::DeviceGuardImplInterface* impl = c10::impl::getDeviceGuardImpl(c10::kCUDA);
  return static_cast<cudaStream_t>(impl->getStream(t.device()).native_handle());
}

bool UseFusedKernel(const MergeAccumulator& acc, int64_t row_offset, const at::Tensor& blk_out,
                    const at::Tensor& blk_lse) {
  return acc.out.is_cuda() && acc.out.scalar_type() == at::kFloat && row_offset == 0 &&
         blk_out.size(2) == acc.out.size(2) && acc.out.is_contiguous() &&
         acc.lse.is_contiguous() && blk_out.is_contiguous() &&
         (blk_out.scalar_type() == at::kFloat || blk_out.scalar_type() == at::kBFloat16) &&
         blk_lse.scalar_type() == at::kFloat && blk_lse.is_contiguous();
}

void MergeFused(MergeAccumulator& acc, const at::Tensor& blk_out, const at::Tensor& blk_lse) {
  const int dim = static_cast<int>(acc.out.size(3));
  const int64_t rows = acc.out.numel() / dim;
  const cudaError_t err = kernels::MergeAttentionBlock(
      acc.out.data_ptr<float>(), acc.lse.data_ptr<float>(), dim, blk_out.data_ptr(),
      blk_out.scalar_type() == at::kFloat ? kernels::DType::kFloat32 : kernels::DType::kBFloat16,
      blk_lse.data_ptr<float>(), dim, rows, dim, CurrentStream(acc.out));
  TORCH_CHECK(err == cudaSuccess, "MergeAttentionBlock failed: ", cudaGetErrorString(err));
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
  if (mode == MergeMode::kStable && UseFusedKernel(acc, row_offset, blk_out, blk_lse)) {
    MergeFused(acc, blk_out, blk_lse);
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
