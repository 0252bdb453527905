// Folding many partial attention results (or gradient contributions) for the
// rows of one rank's tensor in a single pass over memory.
//
// Context-parallel attention produces, per rank, one partial output per
// attention block (up to N + 2 of them at CP size N) and one dQ/dK/dV
// contribution per block. Folding them one at a time into a float32
// accumulator reads and writes that accumulator once per block (10 bytes an
// element with a bf16 block); folding them all at once reads each block once
// and writes the result once, in the dtype the caller wants, with the float32
// sum kept in registers. Rows no block covers come out as 0 (LSE -inf).
//
// Two kinds:
//   kSum       out = sum_i block_i                    (gradients)
//   kLseMerge  lse = log sum_i exp(lse_i)             (attention outputs)
//              out = sum_i exp(lse_i - lse) * block_i
// A partial result already folded into a float32 tensor takes part as one
// more block; `out` may be that same tensor (each element is read before it
// is written by the same thread), which is how more than kMaxFoldBlocks
// blocks fold: in rounds.
#ifndef KP_KERNELS_FOLD_BLOCKS_H_
#define KP_KERNELS_FOLD_BLOCKS_H_

#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/attention_merge.h"
#include "kernels/lse_merge_strided.h"

namespace kp::kernels {

inline constexpr int kMaxFoldBlocks = 16;

enum class FoldKind { kSum, kLseMerge };

// A block covers rows [row_offset, row_offset + rows) of the result; its
// pointers address its own row 0 (b = h = 0). Head-dim stride 1.
struct FoldBlock {
  const void* data = nullptr;
  DType dtype = DType::kFloat32;
  Strides3 strides;
  const float* lse = nullptr;  // kLseMerge only
  Strides3 lse_strides;
  int64_t row_offset = 0;
  int64_t rows = 0;
};

struct FoldArgs {
  FoldKind kind = FoldKind::kSum;
  int64_t batch = 0, heads = 0, rows = 0;
  int dim = 0;
  void* out = nullptr;  // [B, H, rows, dim]
  DType out_dtype = DType::kFloat32;
  Strides3 out_strides;
  float* out_lse = nullptr;  // [B, H, rows], kLseMerge only
  Strides3 out_lse_strides;
  int num_blocks = 0;
  FoldBlock blocks[kMaxFoldBlocks];
};

cudaError_t FoldBlocks(const FoldArgs& args, cudaStream_t stream);

// CPU reference on host memory (bf16 as its bit pattern), the same formula in
// the same order.
void FoldBlocksReference(const FoldArgs& args);

}  // namespace kp::kernels

#endif  // KP_KERNELS_FOLD_BLOCKS_H_
