// The SwiGLU activation of the MLP, fused: one pass forward, one backward.
//
// gate_up is the output of the MLP's first projection, [N, 2F] = [gate | up]
// per row; forward returns out = silu(gate) * up, [N, F], where
// silu(g) = g * sigmoid(g). Backward takes dout and gate_up (nothing else is
// saved) and returns d(gate_up) = [dgate | dup] with
//   dgate = dout * up * sigmoid(g) * (1 + g * (1 - sigmoid(g)))
//   dup   = dout * silu(g)
//
// Element type bf16 in and out, math in fp32 registers. Accesses are 16-byte
// vectors (8 bf16) when F and the row strides are multiples of 8 and the
// pointers 16-byte aligned, scalar otherwise.
#ifndef KP_KERNELS_SWIGLU_H_
#define KP_KERNELS_SWIGLU_H_

#include <cstdint>

#include <cuda_runtime_api.h>

namespace kp::kernels {

// gate_up: bf16 [rows, 2 * cols], row stride gate_up_stride elements (>= 2 cols).
// out: bf16 [rows, cols], contiguous.
cudaError_t SwiGluForward(const void* gate_up, int64_t gate_up_stride, int64_t rows,
                          int64_t cols, void* out, cudaStream_t stream);

// dout: bf16 [rows, cols], row stride dout_stride; gate_up as in forward.
// dgate_up: bf16 [rows, 2 * cols], contiguous.
cudaError_t SwiGluBackward(const void* dout, int64_t dout_stride, const void* gate_up,
                           int64_t gate_up_stride, int64_t rows, int64_t cols, void* dgate_up,
                           cudaStream_t stream);

// CPU references on float32, contiguous rows.
void SwiGluForwardReference(const float* gate_up, int64_t rows, int64_t cols, float* out);
void SwiGluBackwardReference(const float* dout, const float* gate_up, int64_t rows, int64_t cols,
                             float* dgate_up);

}  // namespace kp::kernels

#endif  // KP_KERNELS_SWIGLU_H_
