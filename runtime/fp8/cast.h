// FP8 casts of ATen tensors: the kernels of kernels/fp8_cast on CUDA tensors,
// their bit-identical CPU reference on CPU tensors (tests, emulation).
#ifndef KP_RUNTIME_FP8_CAST_H_
#define KP_RUNTIME_FP8_CAST_H_

#include <ATen/core/Tensor.h>

#include "runtime/fp8/layer_state.h"
#include "runtime/fp8/options.h"

namespace kp::fp8 {

struct Fp8Cast {
  at::Tensor data;    // [rows, cols] Float8_e4m3fn / Float8_e5m2, or undefined
  at::Tensor data_t;  // [cols, rows], or undefined
};

struct CastRequest {
  bool want_data = true;
  bool want_transposed = false;
};

// Casts a 2-D float32/bfloat16 tensor for `role` of `state`: with the delayed
// recipe at state.scale[role]; with the current recipe at the scale from this
// tensor's own amax (written to state.scale[role]). Either way the amax is
// max-ed into amax_history[role][0], the underflow count added to
// underflow[role], and scale_inv[role] set. No host sync on CUDA.
Fp8Cast CastToFp8(const at::Tensor& x, int role, Fp8LayerState& state, Fp8Recipe recipe,
                  int64_t margin, CastRequest request);

// ATen's current stream on a CUDA `device` (through c10's device-guard
// registry: no libc10_cuda needed), for launches that must order with ATen's.
void* CurrentCudaStream(const at::Device& device);

// FP8 -> float32, exact (tests and diagnostics).
at::Tensor Fp8ToFloat(const at::Tensor& fp8);

}  // namespace kp::fp8

#endif  // KP_RUNTIME_FP8_CAST_H_
