// Fused amax + scale + cast of a bf16/fp32 tensor to FP8 (E4M3 or E5M2), with
// an optional transposed copy, in one pass over memory.
//
// The two scaling recipes use these launches differently:
//   - Current scaling (this step's amax): the amax must be known before the
//     cast, so it is two passes: Fp8Amax, then Fp8CastScaled with
//     `amax_for_scale` set (the cast kernel derives the scale from that amax
//     itself, so no separate scale kernel and no host sync).
//   - Delayed scaling (amax history): one pass. Fp8CastScaled casts with the
//     scale computed from the history after the previous step and records this
//     tensor's amax into `amax_out` (the history's newest slot) for the NEXT
//     step's scale.
//
// Layouts: input is a row-major [rows, cols] tensor; `out` is the same shape
// in FP8, `out_t` the transposed [cols, rows] row-major copy. at::_scaled_mm
// on sm90 wants `a` row-major and `b` column-major; the backward GEMMs need
// the transposes of X, W and dY, which come from `out_t` without another pass.
//
// Rounding, saturation, NaN/Inf and subnormal rules: see kernels/fp8_math.h.
// Loads are 16-byte vectors where rows are 16-byte aligned (cols a multiple
// of 8 for bf16 and of 4 for fp32), scalar otherwise.
#ifndef KP_KERNELS_FP8_CAST_H_
#define KP_KERNELS_FP8_CAST_H_

#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/fp8_math.h"

namespace kp::kernels {

enum class Fp8InputType : uint8_t { kFloat32 = 0, kBFloat16 = 1 };

struct Fp8CastArgs {
  const void* input = nullptr;  // [rows, cols] row-major, contiguous
  Fp8InputType input_type = Fp8InputType::kBFloat16;
  int64_t rows = 0;
  int64_t cols = 0;
  Fp8Format format = Fp8Format::kE4M3;

  uint8_t* out = nullptr;    // [rows, cols] FP8 codes, or null
  uint8_t* out_t = nullptr;  // [cols, rows] FP8 codes, or null

  // Exactly one of these gives the quantisation scale (x_fp8 = x * scale):
  const float* scale = nullptr;           // delayed scaling: a device scalar
  const float* amax_for_scale = nullptr;  // current scaling: from Fp8Amax
  int margin = 0;                         // with amax_for_scale

  // Optional outputs (device pointers). Unless `accumulate` is set, the
  // launch zeroes amax_out and underflow_out first; with it they keep growing
  // (the delayed recipe's history slot collects the max over every cast
  // between two updates: a forward, its recomputation and its backward; the
  // slot rolls once per micro-batch).
  bool accumulate = false;
  float* amax_out = nullptr;                  // max |input| (NaN ignored)
  unsigned long long* underflow_out = nullptr;  // nonzero inputs cast to ±0
  float* scale_out = nullptr;                 // the scale used
  float* scale_inv_out = nullptr;             // 1 / scale: _scaled_mm's scale
};

// max |input| over n elements into *amax (device). NaNs are ignored; an Inf
// gives Inf (the scale rule then keeps its fallback).
cudaError_t Fp8Amax(const void* input, Fp8InputType type, int64_t n, float* amax,
                    cudaStream_t stream);

cudaError_t Fp8CastScaled(const Fp8CastArgs& args, cudaStream_t stream);

// CPU reference of Fp8CastScaled with host pointers: the same rules, plain
// C++ (kernels/fp8_math.h). Fields are read as host memory.
void Fp8CastReference(const Fp8CastArgs& args);

// CPU reference of Fp8Amax.
float Fp8AmaxReference(const void* input, Fp8InputType type, int64_t n);

// bf16 bits -> fp32 (exact) and fp32 -> bf16 bits (round to nearest even),
// so host code needs no CUDA headers.
float Bf16BitsToFloat(uint16_t bits);
uint16_t FloatToBf16Bits(float x);

}  // namespace kp::kernels

#endif  // KP_KERNELS_FP8_CAST_H_
