// Rotary position embedding (RoPE, the "rotate half" convention of
// Llama/NeoX) fused with the head split of the attention's qkv projection.
//
// The projection writes one row per token, [B, T, (H + 2 Hkv) * Dh] =
// [q heads | k heads | v heads]. Attention wants per-head [B, heads, T, Dh]
// tensors with q and k rotated: each pair (x[i], x[i + Dh/2]) of a q or k head
// at position t becomes
//   y[i]        = x[i] cos(t, i) - x[i + Dh/2] sin(t, i)
//   y[i + Dh/2] = x[i + Dh/2] cos(t, i) + x[i] sin(t, i)
// RopeQkvForward does the split, the rotation of q and k, and the copy of v
// in one pass over memory; RopeQkvBackward applies the inverse rotation
// (the transpose: sin -> -sin) to dq and dk and packs dq, dk, dv back into
// the projection's [B, T, (H + 2 Hkv) * Dh] gradient, also in one pass.
//
// Element type bf16 in and out, math in fp32 registers, cos/sin tables fp32.
// Accesses are 16-byte vectors (8 bf16) when Dh/2 is a multiple of 8 and
// every pointer and stride is 16-byte aligned, scalar otherwise.
#ifndef KP_KERNELS_ROPE_H_
#define KP_KERNELS_ROPE_H_

#include <cstdint>

#include <cuda_runtime_api.h>

namespace kp::kernels {

struct RopeShape {
  int64_t batch = 0;
  int64_t seq = 0;       // T: tokens per sample (rows of the cos/sin tables)
  int64_t heads = 0;     // H: query heads
  int64_t kv_heads = 0;  // Hkv: key/value heads (H % Hkv == 0 is not required here)
  int64_t head_dim = 0;  // Dh: even
  int64_t row_width() const { return (heads + 2 * kv_heads) * head_dim; }
};

// Element strides of a [B, heads, T, Dh] tensor whose last dimension is
// contiguous (stride 1). Contiguous is {heads*T*Dh, T*Dh, Dh}; the transposed
// view of a [B, T, heads, Dh] buffer is {T*heads*Dh, Dh, heads*Dh}.
struct HeadStrides {
  int64_t batch = 0;
  int64_t head = 0;
  int64_t seq = 0;
  static HeadStrides Contiguous(int64_t heads, int64_t seq, int64_t head_dim) {
    return {heads * seq * head_dim, seq * head_dim, head_dim};
  }
};

// qkv: bf16 [B, T, (H + 2 Hkv) Dh], contiguous. cos, sin: fp32 [T, Dh/2],
// contiguous. q: bf16 [B, H, T, Dh]; k, v: bf16 [B, Hkv, T, Dh], each with
// its own strides (last dimension contiguous): contiguous, or the transposed
// view of [B, T, heads, Dh] buffers (the layout flash attention works in; ATen's
// cuDNN attention then allocates its output in the same layout, so the
// [B, T, H Dh] view of the output needs no copy).
cudaError_t RopeQkvForward(const void* qkv, const float* cos, const float* sin,
                           const RopeShape& shape, void* q, HeadStrides q_strides, void* k,
                           HeadStrides k_strides, void* v, HeadStrides v_strides,
                           cudaStream_t stream);

// dq: bf16 [B, H, T, Dh], dk and dv: bf16 [B, Hkv, T, Dh], each with its own
// strides (last dimension contiguous). dqkv: bf16 [B, T, (H + 2 Hkv) Dh],
// contiguous.
cudaError_t RopeQkvBackward(const void* dq, HeadStrides dq_strides, const void* dk,
                            HeadStrides dk_strides, const void* dv, HeadStrides dv_strides,
                            const float* cos, const float* sin, const RopeShape& shape,
                            void* dqkv, cudaStream_t stream);

// CPU references on float32 (the same layouts, all contiguous), used by the
// tests: the kernel must match them to one bf16 rounding of the output.
void RopeQkvForwardReference(const float* qkv, const float* cos, const float* sin,
                             const RopeShape& shape, float* q, float* k, float* v);
void RopeQkvBackwardReference(const float* dq, const float* dk, const float* dv,
                              const float* cos, const float* sin, const RopeShape& shape,
                              float* dqkv);

}  // namespace kp::kernels

#endif  // KP_KERNELS_ROPE_H_
