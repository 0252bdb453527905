// The LSE merge of attention_merge.h for strided 4-D views: a block's partial
// output [B, H, rows, D] folded into rows [row_offset, row_offset + rows) of
// a float32 accumulator, both addressed by (batch, head, row) strides, so
// context parallelism merges a block that covers part of a rank's queries
// (a narrowed view) or comes in cuDNN's [B, T, H, D] memory order in one pass,
// without copies. Same math (merge_math.h) as MergeAttentionBlock.
#ifndef KP_KERNELS_LSE_MERGE_STRIDED_H_
#define KP_KERNELS_LSE_MERGE_STRIDED_H_

#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/attention_merge.h"

namespace kp::kernels {

// Element strides of a [B, H, T, ...] view; the innermost (head-dim) stride
// is 1 for outputs; lse tensors [B, H, T] use b, h, t.
struct Strides3 {
  int64_t b = 0, h = 0, t = 0;
};

struct StridedMergeArgs {
  int64_t batch = 0, heads = 0, rows = 0;
  int dim = 0;
  float* acc = nullptr;  // points at row 0 of the merged range
  Strides3 acc_strides;
  float* acc_lse = nullptr;
  Strides3 acc_lse_strides;
  const void* blk = nullptr;
  DType blk_dtype = DType::kFloat32;
  Strides3 blk_strides;
  const float* blk_lse = nullptr;
  Strides3 blk_lse_strides;
};

cudaError_t MergeAttentionBlockStrided(const StridedMergeArgs& args, cudaStream_t stream);

// CPU reference (float32 block).
void MergeAttentionBlockStridedReference(const StridedMergeArgs& args);

}  // namespace kp::kernels

#endif  // KP_KERNELS_LSE_MERGE_STRIDED_H_
