#include <cuda_bf16.h>

#include "kernels/lse_merge_strided.h"
#include "kernels/merge_math.h"

namespace kp::kernels {
namespace {

template <typename T>
__device__ __forceinline__ float Load(const T* p);
template <>
__device__ __forceinline__ float Load<float>(const float* p) {
  return *p;
}
template <>
__device__ __forceinline__ float Load<__nv_bfloat16>(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}

// One warp per (b, h, t) row, as in attention_merge.cu; only the addressing
// differs.
template <typename T>
__global__ void StridedMergeKernel(StridedMergeArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t total = a.batch * a.heads * a.rows;
  if (row >= total) return;
  const int64_t t = row % a.rows;
  const int64_t h = (row / a.rows) % a.heads;
  const int64_t b = row / (a.rows * a.heads);
  float* acc_lse = a.acc_lse + b * a.acc_lse_strides.b + h * a.acc_lse_strides.h +
                   t * a.acc_lse_strides.t;
  const float blk_lse =
      a.blk_lse[b * a.blk_lse_strides.b + h * a.blk_lse_strides.h + t * a.blk_lse_strides.t];
  const MergeWeights w = ComputeMergeWeights(*acc_lse, blk_lse);
  float* acc = a.acc + b * a.acc_strides.b + h * a.acc_strides.h + t * a.acc_strides.t;
  const T* blk = static_cast<const T*>(a.blk) + b * a.blk_strides.b + h * a.blk_strides.h +
                 t * a.blk_strides.t;
  for (int i = lane; i < a.dim; i += 32) acc[i] = w.keep * acc[i] + w.take * Load(blk + i);
  __syncwarp();
  if (lane == 0) *acc_lse = w.lse;
}

}  // namespace

cudaError_t MergeAttentionBlockStrided(const StridedMergeArgs& args, cudaStream_t stream) {
  const int64_t rows = args.batch * args.heads * args.rows;
  if (rows == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks = (rows * 32 + kThreads - 1) / kThreads;
  if (args.blk_dtype == DType::kFloat32) {
    StridedMergeKernel<float><<<blocks, kThreads, 0, stream>>>(args);
  } else {
    StridedMergeKernel<__nv_bfloat16><<<blocks, kThreads, 0, stream>>>(args);
  }
  return cudaGetLastError();
}

}  // namespace kp::kernels
