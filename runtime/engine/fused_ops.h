// The element-wise work of a Llama block as fused CUDA kernels with autograd:
//  - SplitQkvWithRope: the qkv projection's output split into per-head q, k,
//    v with RoPE applied to q and k (kernels/rope.h), one kernel forward and
//    one backward instead of ~10 ATen kernels and transposed copies each way;
//  - SwiGluActivation: silu(gate) * up (kernels/swiglu.h), one kernel each
//    way, saving only gate_up for backward;
//  - FusedCrossEntropySum: the loss of bf16 logits (kernels/cross_entropy.h),
//    one read of the logits forward and one read + write backward, instead
//    of fp32 copies, log_softmax and their gradients (~6x the traffic).
// The fused path runs on CUDA bf16 tensors on sm_90+ (the kernels are built
// for Hopper) when `fused` is set; everything else (CPU, fp32, float64, or
// fused off) takes the ATen composition of layers.h, which is also the
// reference the fused path is tested against.
#ifndef KP_RUNTIME_ENGINE_FUSED_OPS_H_
#define KP_RUNTIME_ENGINE_FUSED_OPS_H_

#include <cstdint>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "runtime/engine/layers.h"

namespace kp::engine {

// True when the fused kernels can run on tensors of this device and dtype.
bool FusedKernelsApply(const c10::Device& device, at::ScalarType dtype);

// The dtype MakeRopeTable should use: fp32 for the fused path (its kernels
// read fp32 tables; a bf16 table would round the angles to 8 bits), else the
// compute dtype (the composition multiplies in it).
at::ScalarType RopeTableDtype(bool fused, const c10::Device& device, at::ScalarType compute);

// q: [B, H, T, Dh]; k, v: [B, Hkv, T, Dh].
struct QkvHeads {
  at::Tensor q, k, v;
};

// qkv: [B, T, (H + 2 Hkv) Dh] = [q heads | k heads | v heads] per token;
// rope: tables of T rows (any float dtype: each path converts as it needs).
// The fused outputs are stored as [B, T, heads, Dh] (transposed strides: the
// layout of flash attention, which ATen's cuDNN attention keeps for its
// output); the composition's are a view of qkv (v) and fresh contiguous
// tensors (q, k). Differentiable in qkv.
QkvHeads SplitQkvWithRope(const at::Tensor& qkv, const RopeTable& rope, int64_t n_heads,
                          int64_t n_kv_heads, bool fused);

// The ATen composition (the unfused path).
QkvHeads SplitQkvWithRopeReference(const at::Tensor& qkv, const RopeTable& rope, int64_t n_heads,
                                   int64_t n_kv_heads);

// gate_up: [..., 2F] = [gate | up]; returns silu(gate) * up, [..., F]. The
// unfused path is SwiGlu (layers.h).
at::Tensor SwiGluActivation(const at::Tensor& gate_up, bool fused);

// Sum over rows of cross_entropy(logits[n], targets[n]) as an fp32 0-dim
// tensor; differentiable in logits. logits: CUDA bf16 [N, V] (callers check
// FusedKernelsApply); targets: integer [N]. A target outside [0, V) makes
// the sum NaN (and its row's gradient NaN) instead of reading out of bounds.
// To save a logits-sized buffer, backward writes the gradient over the
// saved logits (when they had a contiguous last dimension): whatever
// produced them must not need them in its own backward (a Linear does not),
// nobody may read them after backward, and backward runs once (checked).
at::Tensor FusedCrossEntropySum(const at::Tensor& logits, const at::Tensor& targets);

}  // namespace kp::engine

#endif  // KP_RUNTIME_ENGINE_FUSED_OPS_H_
