// The Attention seam: the model hands q, k, v (RoPE already applied) to an
// Attention and gets the attended values back. LocalAttention runs ATen's
// fused kernels on one device; the context-parallel wrapper (runtime/parallel/)
// implements the same interface over a sequence sharded across cp ranks, and
// AttentionContext carries what it needs to know about the shard.
#ifndef KP_RUNTIME_ENGINE_ATTENTION_H_
#define KP_RUNTIME_ENGINE_ATTENTION_H_

#include <cstdint>
#include <memory>

#include <ATen/core/Tensor.h>

namespace kp::engine {

// How the local tokens sit in the full sequence.
enum class SequenceLayout {
  kWhole,      // this rank holds the whole sequence (no context parallelism)
  kContiguous, // rank r holds tokens [r*T, (r+1)*T)
  kZigzag,     // the sequence is cut into 2*cp chunks; rank r holds chunks r
               // and 2*cp-1-r (balances causal work across ranks)
};

struct AttentionContext {
  bool causal = true;
  // Global positions of the local tokens, int64 [T_local] on the compute
  // device (the same positions RoPE used). For kWhole they are 0..T-1.
  at::Tensor positions;
  SequenceLayout layout = SequenceLayout::kWhole;
  int64_t cp_rank = 0;
  int64_t cp_size = 1;
  int64_t global_seq_len = 0;  // T over all cp ranks
  // Softmax scale; <= 0 means 1/sqrt(head_dim).
  double scale = 0.0;
};

class Attention {
 public:
  virtual ~Attention() = default;
  // q: [B, H, T, Dh]; k, v: [B, Hkv, T, Dh] with H % Hkv == 0 (grouped-query:
  // each kv head serves H/Hkv query heads). Returns [B, H, T, Dh] in q's dtype.
  // Differentiable through autograd.
  virtual at::Tensor Forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const AttentionContext& context) = 0;
};

// Attention on one device: at::scaled_dot_product_attention (the math
// kernel on CPU, any dtype including float64); on GPU in bf16/fp16 cuDNN's
// fused attention first (prefer_cudnn), falling back to ATen's choice (flash)
// if cuDNN rejects the call. Requires layout == kWhole.
std::unique_ptr<Attention> MakeLocalAttention(bool prefer_cudnn = true);

// Expands [B, Hkv, T, Dh] to [B, H, T, Dh] by repeating each kv head
// H/Hkv times (query head h uses kv head h / (H/Hkv)).
at::Tensor RepeatKvHeads(const at::Tensor& kv, int64_t n_heads);

}  // namespace kp::engine

#endif  // KP_RUNTIME_ENGINE_ATTENTION_H_
