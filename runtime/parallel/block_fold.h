// Collects one rank's per-block attention results — partial outputs with
// their LSE, or dQ/dK/dV contributions — each covering a run of rows of a
// [B, H, T, D] tensor, and folds them into that tensor in one pass.
//
// Why: folding each block into a float32 accumulator as it arrives reads and
// writes the accumulator once per block (10 bytes an element for a bf16
// block, N + 2 blocks a rank at CP size N); folding them together reads each
// block once and writes the result once, in the dtype wanted, with no
// float32 tensor at all when nothing forces one. The cost is memory: the
// pending blocks live until the fold (at most kernels::kMaxFoldBlocks; past
// that they fold, in rounds, into a float32 partial result).
//
// On CUDA with float32/bf16 tensors the fold is kernels::FoldBlocks;
// elsewhere (CPU, float64, the deliberately broken merge) ATen ops, one block
// at a time, as the reference.
#ifndef KP_RUNTIME_PARALLEL_BLOCK_FOLD_H_
#define KP_RUNTIME_PARALLEL_BLOCK_FOLD_H_

#include <cstdint>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "kernels/fold_blocks.h"
#include "runtime/parallel/lse_merge.h"

namespace kp::parallel {

class BlockFolder {
 public:
  enum class Kind {
    kSum,       // gradients: the blocks add up
    kLseMerge,  // attention outputs: weighted by exp(lse_i - lse)
  };

  // Most blocks kept pending (the rest of kernels::kMaxFoldBlocks is the
  // float32 partial a later round starts from).
  static constexpr int kMaxPending = kernels::kMaxFoldBlocks - 1;

  // like: a tensor shaped like the result [B, H, T, D] (its device and the
  // accumulation dtype follow it: float64 for float64, float32 otherwise).
  // max_pending (1..kMaxPending): blocks kept before they fold into a
  // float32 partial result; fewer keeps less memory, more reads less.
  BlockFolder(Kind kind, const at::Tensor& like, MergeMode merge = MergeMode::kStable,
              int max_pending = kMaxPending);

  // block: [B, H, rows, D], any (b, h, t) strides; lse: [B, H, rows] float32
  // (kLseMerge only). The block must stay unmodified until the fold.
  void Add(int64_t row_offset, const at::Tensor& block, const at::Tensor& lse = at::Tensor());

  bool empty() const { return pending_.empty() && !partial_.defined(); }

  // Everything folded into a new tensor of `dtype` ([B, H, T, D]), and for
  // kLseMerge the float32 lse [B, H, T] (-inf, output 0, where no block
  // covered a row).
  std::pair<at::Tensor, at::Tensor> Finish(at::ScalarType dtype);

  // kSum: out = base + the blocks (base undefined: 0). out may be base (an
  // accumulator added to in place) or a tensor of another dtype (the final
  // sum rounded once). Rows no block covers get base's rows (or 0).
  void FinishInto(const at::Tensor& out, const at::Tensor& base);

 private:
  struct Pending {
    int64_t row_offset;
    at::Tensor block, lse;
  };
  bool OnDevice(const at::Tensor& out, const at::Tensor& base) const;
  void Fold(const at::Tensor& out, const at::Tensor& out_lse, const at::Tensor& base,
            const at::Tensor& base_lse);
  void FoldOnDevice(const at::Tensor& out, const at::Tensor& out_lse, const at::Tensor& base,
                    const at::Tensor& base_lse);
  void FoldWithAten(const at::Tensor& out, const at::Tensor& out_lse, const at::Tensor& base,
                    const at::Tensor& base_lse);

  Kind kind_;
  MergeMode merge_;
  int max_pending_;
  std::vector<int64_t> shape_;
  at::TensorOptions acc_options_;
  std::vector<Pending> pending_;
  at::Tensor partial_, partial_lse_;  // float32 rounds past kMaxFoldBlocks
};

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_BLOCK_FOLD_H_
