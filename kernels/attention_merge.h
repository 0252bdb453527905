// Merging partial attention results with their log-sum-exp (LSE).
//
// Context-parallel attention computes softmax(QK^T)V over one K/V block at a
// time; each block yields an output O_b and the LSE of its scores. Two partial
// results combine exactly as
//   lse = log(exp(lse_a) + exp(lse_b))
//   O   = exp(lse_a - lse) * O_a + exp(lse_b - lse) * O_b
// which we evaluate in the numerically stable sigmoid form (no exp overflow,
// and rows that saw no keys, lse = -inf, contribute nothing).
#ifndef KP_KERNELS_ATTENTION_MERGE_H_
#define KP_KERNELS_ATTENTION_MERGE_H_

#include <cstdint>

#include <cuda_runtime_api.h>

namespace kp::kernels {

// Element type of a block's partial output.
enum class DType { kFloat32, kBFloat16 };

// Folds one block's partial result into a float32 accumulator, in place.
//   acc:     [rows, dim] float32, row stride acc_stride elements
//   acc_lse: [rows] float32
//   blk:     [rows, dim] of blk_dtype, row stride blk_stride elements
//   blk_lse: [rows] float32, may hold -inf (a fully masked row)
// rows is typically batch * heads * sequence; dim is the head dimension.
cudaError_t MergeAttentionBlock(float* acc, float* acc_lse, int64_t acc_stride, const void* blk,
                                DType blk_dtype, const float* blk_lse, int64_t blk_stride,
                                int64_t rows, int dim, cudaStream_t stream);

// The CPU reference of MergeAttentionBlock (float32 block), used by tests and
// by the CPU path of the engine.
void MergeAttentionBlockReference(float* acc, float* acc_lse, int64_t acc_stride, const float* blk,
                                  const float* blk_lse, int64_t blk_stride, int64_t rows, int dim);

}  // namespace kp::kernels

#endif  // KP_KERNELS_ATTENTION_MERGE_H_
