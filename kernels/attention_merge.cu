#include <cuda_bf16.h>

#include "kernels/attention_merge.h"
#include "kernels/merge_math.h"

namespace kp::kernels {
namespace {

template <typename T>
__device__ __forceinline__ float ToFloat(T v);
template <>
__device__ __forceinline__ float ToFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float ToFloat<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

// One warp per row: the row's two LSEs are read once, the weights computed
// once, and the warp streams the row's dim elements with coalesced accesses.
template <typename T>
__global__ void MergeKernel(float* __restrict__ acc, float* __restrict__ acc_lse,
                            int64_t acc_stride, const T* __restrict__ blk,
                            const float* __restrict__ blk_lse, int64_t blk_stride, int64_t rows,
                            int dim) {
  const int lane = threadIdx.x & 31;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (row >= rows) return;
  MergeWeights w = ComputeMergeWeights(acc_lse[row], blk_lse[row]);
  float* a = acc + row * acc_stride;
  const T* b = blk + row * blk_stride;
  for (int i = lane; i < dim; i += 32) {
    a[i] = w.keep * a[i] + w.take * ToFloat(b[i]);
  }
  if (lane == 0) acc_lse[row] = w.lse;
}

}  // namespace

cudaError_t MergeAttentionBlock(float* acc, float* acc_lse, int64_t acc_stride, const void* blk,
                                DType blk_dtype, const float* blk_lse, int64_t blk_stride,
                                int64_t rows, int dim, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks = (rows * 32 + kThreads - 1) / kThreads;
  if (blk_dtype == DType::kFloat32) {
    MergeKernel<float><<<blocks, kThreads, 0, stream>>>(acc, acc_lse, acc_stride,
                                                        static_cast<const float*>(blk), blk_lse,
                                                        blk_stride, rows, dim);
  } else {
    MergeKernel<__nv_bfloat16><<<blocks, kThreads, 0, stream>>>(
        acc, acc_lse, acc_stride, static_cast<const __nv_bfloat16*>(blk), blk_lse, blk_stride,
        rows, dim);
  }
  return cudaGetLastError();
}

}  // namespace kp::kernels
