// Per-layer FP8 state and the scaling recipes' math on it.
//
// A layer casts three tensors: x (activations, E4M3), w (weight, E4M3) and
// grad (output gradient, E5M2). Their state is packed per layer, one row per
// role, so a step's update is a handful of ops per layer:
//   amax_history [3, L] float32: column 0 collects this step's amax (the cast
//                kernels max into it), columns 1.. are earlier steps;
//   scale        [3] float32: x_fp8 = x * scale;
//   scale_inv    [3] float32: 1 / scale, the dequantisation scale _scaled_mm takes;
//   underflow    [3] int64: nonzero elements cast to zero since the last read;
//   pending_update [1] int64 (CPU): set by the backward pass, cleared by the
//                update, so a step's update happens once, at the next forward;
//   steps        [1] int64 (CPU): completed steps. With no history yet (step 0)
//                the delayed recipe casts with current scaling: a scale of 1
//                would flush most gradients (~1e-5) to zero in E5M2.
#ifndef KP_RUNTIME_FP8_LAYER_STATE_H_
#define KP_RUNTIME_FP8_LAYER_STATE_H_

#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "kernels/fp8_math.h"
#include "runtime/common/status.h"
#include "runtime/fp8/options.h"

namespace kp::fp8 {

enum Fp8Role : int { kRoleX = 0, kRoleW = 1, kRoleGrad = 2 };
inline constexpr int kNumRoles = 3;

const char* RoleName(int role);  // "x", "w", "grad"
kernels::Fp8Format RoleFormat(int role);  // E4M3, E4M3, E5M2

struct Fp8LayerState {
  at::Tensor amax_history;
  at::Tensor scale;
  at::Tensor scale_inv;
  at::Tensor underflow;
  at::Tensor pending_update;
  at::Tensor steps;
  at::Tensor fp8_max;  // [3] float32 constants on the device: 448, 448, 57344

  // Scales start at 1 and histories at 0, on `device`.
  static Fp8LayerState Create(int64_t history_len, at::Device device);
};

// Ends a step for one layer. Delayed recipe: scale = fp8_max / (max(history)
// * 2^margin) per role, keeping the old scale where that max is 0, NaN or
// Inf; current recipe: scales are the kernels' business, nothing changes.
// Both then roll the history one column (the oldest step drops out), zero
// column 0 for the next step and count the step. Runs on the state's device
// without a host sync.
void EndStep(Fp8LayerState& state, Fp8Recipe recipe, int64_t margin);

// The state as named tensors for the checkpoint, under "<prefix>.fp8.":
// x_amax_history, w_amax_history, grad_amax_history ([L] each), x_scale,
// w_scale, grad_scale, pending_update and steps ([1] each). CPU copies.
void AppendStateDict(const std::string& prefix, const Fp8LayerState& state,
                     std::map<std::string, at::Tensor>* out);

// Restores what AppendStateDict wrote; errors name the missing tensor or the
// mismatched history length. scale_inv is recomputed.
absl::Status LoadStateDict(const std::string& prefix, const std::map<std::string, at::Tensor>& in,
                           Fp8LayerState* state);

}  // namespace kp::fp8

#endif  // KP_RUNTIME_FP8_LAYER_STATE_H_
