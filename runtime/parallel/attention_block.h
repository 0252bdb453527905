// One attention block: a run of query rows against a run of key/value rows,
// either fully visible or causal on a square diagonal block. Returns the
// block's partial output and log-sum-exp (LSE) so partial results over many
// key/value blocks merge exactly (see lse_merge.h), and computes the block's
// gradients from the FINAL merged output and LSE (the ring-attention backward:
// softmax probabilities of a block are exp(s - lse_global), so per-block
// gradients sum to the gradients of full attention).
//
// Backends: on CPU (and for float32/float64 on CUDA) a math implementation in
// ATen ops; on CUDA with bf16/fp16, ATen's cuDNN or flash attention ops, the
// ones that return the LSE.
#ifndef KP_RUNTIME_PARALLEL_ATTENTION_BLOCK_H_
#define KP_RUNTIME_PARALLEL_ATTENTION_BLOCK_H_

#include <string>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace kp::parallel {

enum class AttnBackend {
  kAuto,   // cuDNN for bf16/fp16 on CUDA (measured ~1.65x flash on H200), else math
  kMath,   // ATen matmul/softmax; any device, float32/float64 (bf16 upcast)
  kFlash,  // at::_scaled_dot_product_flash_attention (CUDA, bf16/fp16)
  kCudnn,  // at::_scaled_dot_product_cudnn_attention (CUDA, bf16/fp16)
};

std::string AttnBackendName(AttnBackend backend);

// kCausal is only used on square blocks whose query and key rows hold the
// same positions, where top-left and bottom-right alignment coincide.
enum class BlockMask { kFull, kCausal };

// The backend actually used for tensors like q (resolves kAuto; fused
// backends fall back to math for float32/float64 or CPU tensors).
AttnBackend ResolveBackend(AttnBackend requested, const at::Tensor& q);

struct BlockOutput {
  at::Tensor out;  // [B, H, Tq, D], q's dtype (math: the compute dtype)
  at::Tensor lse;  // [B, H, Tq], float32 (float64 for float64 inputs)
};

// q: [B, H, Tq, D]; k, v: [B, Hkv, Tk, D] with H % Hkv == 0 (grouped-query
// attention: kv head j serves q heads j*H/Hkv .. (j+1)*H/Hkv - 1).
BlockOutput AttentionBlockForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  BlockMask mask, double scale, AttnBackend backend);

struct BlockGrads {
  at::Tensor dq, dk, dv;  // shapes of q, k, v
};

// out and lse are the final (merged) attention output and LSE for q's rows.
BlockGrads AttentionBlockBackward(const at::Tensor& dout, const at::Tensor& q,
                                  const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                                  const at::Tensor& lse, BlockMask mask, double scale,
                                  AttnBackend backend);

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_ATTENTION_BLOCK_H_
