// Folding a block's partial attention output into an accumulator with the
// log-sum-exp, in float32 (float64 for float64 inputs), in the stable form of
// kernels/merge_math.h: lse = hi + log1p(exp(lo - hi)), weights exp(x - lse),
// rows that saw no key yet (lse = -inf) contribute nothing.
#ifndef KP_RUNTIME_PARALLEL_LSE_MERGE_H_
#define KP_RUNTIME_PARALLEL_LSE_MERGE_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace kp::parallel {

enum class MergeMode {
  kStable,
  // A deliberately wrong merge (the block's weight is not renormalised), only
  // for proving that the parity self-check catches a broken merge.
  kBrokenForTesting,
};

// An empty accumulator for queries shaped like q: out [B, H, T, D] zeros and
// lse [B, H, T] = -inf, in the accumulation dtype.
struct MergeAccumulator {
  at::Tensor out;
  at::Tensor lse;
};
MergeAccumulator MakeAccumulator(const at::Tensor& q);

// Merges blk_out [B, H, rows, D] / blk_lse [B, H, rows] into the accumulator
// rows [row_offset, row_offset + rows). On CUDA with a float32 accumulator and
// a float32/bf16 block, runs the fused kernel kernels::MergeAttentionBlockStrided
// (one pass over memory, any row offset and memory order); otherwise ATen ops.
void MergeBlock(MergeAccumulator& acc, int64_t row_offset, const at::Tensor& blk_out,
                const at::Tensor& blk_lse, MergeMode mode = MergeMode::kStable);

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_LSE_MERGE_H_
