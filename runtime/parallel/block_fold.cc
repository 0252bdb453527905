#include "runtime/parallel/block_fold.h"

#include <limits>

#include <ATen/ATen.h>

#include "kernels/fold_blocks.h"
#include "runtime/common/status.h"
#include "runtime/parallel/current_stream.h"

namespace kp::parallel {
namespace {

bool Foldable(const at::Tensor& t) {
  return t.is_cuda() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16) &&
         t.dim() == 4 && (t.stride(3) == 1 || t.size(3) == 1);
}

bool FoldableLse(const at::Tensor& t) {
  return t.is_cuda() && t.scalar_type() == at::kFloat && t.dim() == 3;
}

kernels::DType KernelDType(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat ? kernels::DType::kFloat32 : kernels::DType::kBFloat16;
}

kernels::Strides3 Strides(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

kernels::FoldBlock Describe(int64_t row_offset, const at::Tensor& block, const at::Tensor& lse) {
  kernels::FoldBlock b;
  b.data = block.const_data_ptr();
  b.dtype = KernelDType(block);
  b.strides = Strides(block);
  if (lse.defined()) {
    b.lse = lse.const_data_ptr<float>();
    b.lse_strides = Strides(lse);
  }
  b.row_offset = row_offset;
  b.rows = block.size(2);
  return b;
}

}  // namespace

BlockFolder::BlockFolder(Kind kind, const at::Tensor& like, MergeMode merge, int max_pending)
    : kind_(kind),
      merge_(merge),
      max_pending_(max_pending),
      shape_(like.sizes().vec()),
      acc_options_(like.options().dtype(like.scalar_type() == at::kDouble ? at::kDouble
                                                                          : at::kFloat)) {
  KP_CHECK(shape_.size() == 4);
  KP_CHECK(max_pending_ >= 1 && max_pending_ <= kMaxPending);
}

void BlockFolder::Add(int64_t row_offset, const at::Tensor& block, const at::Tensor& lse) {
  KP_CHECK(block.dim() == 4 && block.size(0) == shape_[0] && block.size(1) == shape_[1] &&
           block.size(3) == shape_[3]);
  KP_CHECK(row_offset >= 0 && row_offset + block.size(2) <= shape_[2]);
  KP_CHECK((kind_ == Kind::kLseMerge) == lse.defined());
  if (block.size(2) == 0) return;
  if (static_cast<int>(pending_.size()) >= max_pending_) {
    if (!partial_.defined()) {
      partial_ = at::empty(shape_, acc_options_);
      if (kind_ == Kind::kLseMerge) {
        partial_lse_ = at::empty({shape_[0], shape_[1], shape_[2]}, acc_options_);
      }
      Fold(partial_, partial_lse_, at::Tensor(), at::Tensor());
    } else {
      Fold(partial_, partial_lse_, partial_, partial_lse_);
    }
  }
  pending_.push_back({row_offset, block, lse});
}

std::pair<at::Tensor, at::Tensor> BlockFolder::Finish(at::ScalarType dtype) {
  at::Tensor out = at::empty(shape_, acc_options_.dtype(dtype));
  at::Tensor lse;
  if (kind_ == Kind::kLseMerge) lse = at::empty({shape_[0], shape_[1], shape_[2]}, acc_options_);
  Fold(out, lse, partial_, partial_lse_);
  partial_ = partial_lse_ = at::Tensor();
  return {out, lse};
}

void BlockFolder::FinishInto(const at::Tensor& out, const at::Tensor& base) {
  KP_CHECK(kind_ == Kind::kSum);
  KP_CHECK(out.sizes() == at::IntArrayRef(shape_));
  KP_CHECK(!base.defined() || base.sizes() == at::IntArrayRef(shape_));
  if (partial_.defined()) {
    // Earlier rounds: the partial result is one more block to add.
    if (base.defined()) Fold(partial_, at::Tensor(), partial_, at::Tensor());
    pending_.push_back({0, partial_, at::Tensor()});
    partial_ = at::Tensor();
  }
  if (pending_.empty() && base.defined() && out.data_ptr() == base.data_ptr() &&
      out.strides() == base.strides() && out.scalar_type() == base.scalar_type()) {
    return;  // nothing to add to an accumulator updated in place
  }
  Fold(out, at::Tensor(), base, at::Tensor());
}

bool BlockFolder::OnDevice(const at::Tensor& out, const at::Tensor& base) const {
  if (merge_ != MergeMode::kStable || !Foldable(out)) return false;
  if (base.defined() && !Foldable(base)) return false;
  for (const Pending& p : pending_) {
    if (!Foldable(p.block) || (p.lse.defined() && !FoldableLse(p.lse))) return false;
  }
  return true;
}

void BlockFolder::Fold(const at::Tensor& out, const at::Tensor& out_lse, const at::Tensor& base,
                       const at::Tensor& base_lse) {
  if (OnDevice(out, base) && (!out_lse.defined() || FoldableLse(out_lse)) &&
      (!base_lse.defined() || FoldableLse(base_lse))) {
    FoldOnDevice(out, out_lse, base, base_lse);
  } else {
    FoldWithAten(out, out_lse, base, base_lse);
  }
  pending_.clear();  // the blocks may be freed once the fold is queued
}

void BlockFolder::FoldOnDevice(const at::Tensor& out, const at::Tensor& out_lse,
                               const at::Tensor& base, const at::Tensor& base_lse) {
  kernels::FoldArgs a;
  a.kind = kind_ == Kind::kSum ? kernels::FoldKind::kSum : kernels::FoldKind::kLseMerge;
  a.batch = shape_[0];
  a.heads = shape_[1];
  a.rows = shape_[2];
  a.dim = static_cast<int>(shape_[3]);
  a.out = out.data_ptr();
  a.out_dtype = KernelDType(out);
  a.out_strides = Strides(out);
  if (out_lse.defined()) {
    a.out_lse = out_lse.data_ptr<float>();
    a.out_lse_strides = Strides(out_lse);
  }
  if (base.defined()) a.blocks[a.num_blocks++] = Describe(0, base, base_lse);
  for (const Pending& p : pending_) a.blocks[a.num_blocks++] = Describe(p.row_offset, p.block, p.lse);
  const cudaError_t err = kernels::FoldBlocks(a, CurrentStream(out));
  TORCH_CHECK(err == cudaSuccess, "FoldBlocks failed: ", cudaGetErrorString(err));
}

void BlockFolder::FoldWithAten(const at::Tensor& out, const at::Tensor& out_lse,
                               const at::Tensor& base, const at::Tensor& base_lse) {
  if (kind_ == Kind::kSum) {
    at::Tensor acc = base.defined() ? base.to(acc_options_.dtype()).clone()
                                    : at::zeros(shape_, acc_options_);
    for (const Pending& p : pending_) acc.narrow(2, p.row_offset, p.block.size(2)).add_(p.block);
    out.copy_(acc);
    return;
  }
  MergeAccumulator acc;
  if (base.defined()) {
    acc = {base.to(acc_options_.dtype()).clone(), base_lse.to(acc_options_.dtype()).clone()};
  } else {
    acc = {at::zeros(shape_, acc_options_),
           at::full({shape_[0], shape_[1], shape_[2]}, -std::numeric_limits<double>::infinity(),
                    acc_options_)};
  }
  for (const Pending& p : pending_) MergeBlock(acc, p.row_offset, p.block, p.lse, merge_);
  out.copy_(acc.out);
  out_lse.copy_(acc.lse);
}

}  // namespace kp::parallel
