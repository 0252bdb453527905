#include <algorithm>

#include <cuda_bf16.h>

#include "kernels/bf16_vec.cuh"
#include "kernels/swiglu.h"

namespace kp::kernels {
namespace {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float Sigmoid(float g) { return 1.0f / (1.0f + __expf(-g)); }

// blockIdx.y strides over rows, x over chunks of kVec columns: no integer
// division anywhere, and each row's gate and up halves stream contiguously.
template <int kVec>
__global__ void SwiGluForwardKernel(const bf16* __restrict__ gate_up, int64_t ld, int64_t rows,
                                    int cols, bf16* __restrict__ out) {
  const int c = (blockIdx.x * blockDim.x + threadIdx.x) * kVec;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const bf16* in = gate_up + r * ld + c;
    float g[kVec], u[kVec], y[kVec];
    LoadBf16<kVec>(in, g);
    LoadBf16<kVec>(in + cols, u);
#pragma unroll
    for (int i = 0; i < kVec; ++i) y[i] = g[i] * Sigmoid(g[i]) * u[i];
    StoreBf16<kVec>(out + r * cols + c, y);
  }
}

template <int kVec>
__global__ void SwiGluBackwardKernel(const bf16* __restrict__ dout, int64_t ld_out,
                                     const bf16* __restrict__ gate_up, int64_t ld, int64_t rows,
                                     int cols, bf16* __restrict__ dgate_up) {
  const int c = (blockIdx.x * blockDim.x + threadIdx.x) * kVec;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const bf16* in = gate_up + r * ld + c;
    float g[kVec], u[kVec], d[kVec], dg[kVec], du[kVec];
    LoadBf16<kVec>(in, g);
    LoadBf16<kVec>(in + cols, u);
    LoadBf16<kVec>(dout + r * ld_out + c, d);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const float s = Sigmoid(g[i]);
      const float silu = g[i] * s;
      dg[i] = d[i] * u[i] * (s * (1.0f + g[i] * (1.0f - s)));
      du[i] = d[i] * silu;
    }
    bf16* o = dgate_up + r * 2 * static_cast<int64_t>(cols) + c;
    StoreBf16<kVec>(o, dg);
    StoreBf16<kVec>(o + cols, du);
  }
}

struct Launch {
  dim3 grid, block;
};

Launch Configure(int64_t rows, int64_t cols, int vec) {
  const int64_t chunks = (cols + vec - 1) / vec;
  const int threads = static_cast<int>(std::min<int64_t>(256, (chunks + 31) / 32 * 32));
  const int64_t bx = (chunks + threads - 1) / threads;
  // gridDim.y is limited to 65535; the kernels stride over the remaining rows.
  const int64_t by = std::min<int64_t>(rows, 65535);
  return {dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by)), dim3(threads)};
}

}  // namespace

cudaError_t SwiGluForward(const void* gate_up, int64_t gate_up_stride, int64_t rows,
                          int64_t cols, void* out, cudaStream_t stream) {
  if (rows < 0 || cols < 0 || cols > (int64_t{1} << 30) || gate_up_stride < 2 * cols) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0 || cols == 0) return cudaSuccess;
  const bool vec = cols % 8 == 0 && gate_up_stride % 8 == 0 && Aligned16(gate_up) &&
                   Aligned16(out);
  const Launch l = Configure(rows, cols, vec ? 8 : 1);
  const auto* in = static_cast<const bf16*>(gate_up);
  auto* o = static_cast<bf16*>(out);
  if (vec) {
    SwiGluForwardKernel<8><<<l.grid, l.block, 0, stream>>>(in, gate_up_stride, rows,
                                                           static_cast<int>(cols), o);
  } else {
    SwiGluForwardKernel<1><<<l.grid, l.block, 0, stream>>>(in, gate_up_stride, rows,
                                                           static_cast<int>(cols), o);
  }
  return cudaGetLastError();
}

cudaError_t SwiGluBackward(const void* dout, int64_t dout_stride, const void* gate_up,
                           int64_t gate_up_stride, int64_t rows, int64_t cols, void* dgate_up,
                           cudaStream_t stream) {
  if (rows < 0 || cols < 0 || cols > (int64_t{1} << 30) || gate_up_stride < 2 * cols ||
      dout_stride < cols) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0 || cols == 0) return cudaSuccess;
  const bool vec = cols % 8 == 0 && gate_up_stride % 8 == 0 && dout_stride % 8 == 0 &&
                   Aligned16(dout) && Aligned16(gate_up) && Aligned16(dgate_up);
  const Launch l = Configure(rows, cols, vec ? 8 : 1);
  const auto* d = static_cast<const bf16*>(dout);
  const auto* in = static_cast<const bf16*>(gate_up);
  auto* o = static_cast<bf16*>(dgate_up);
  if (vec) {
    SwiGluBackwardKernel<8><<<l.grid, l.block, 0, stream>>>(d, dout_stride, in, gate_up_stride,
                                                            rows, static_cast<int>(cols), o);
  } else {
    SwiGluBackwardKernel<1><<<l.grid, l.block, 0, stream>>>(d, dout_stride, in, gate_up_stride,
                                                            rows, static_cast<int>(cols), o);
  }
  return cudaGetLastError();
}

}  // namespace kp::kernels
