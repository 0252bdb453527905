// The decoder-only transformer (Llama style): token embedding, n_layers
// blocks of [RMSNorm -> grouped-query attention with RoPE -> residual,
// RMSNorm -> SwiGLU MLP -> residual], a final RMSNorm and the LM head.
// Every projection comes from the LinearFactory and attention from the
// Attention seam, both passed in.
//
// Precision: parameters are stored in LinearContext::param_dtype (fp32: the
// master weights) and the math runs in compute_dtype (bf16 on GPU); each
// layer casts its fp32 weight to bf16 per use inside the autograd graph, so
// gradients accumulate in fp32 in the parameters' .grad.
#ifndef KP_RUNTIME_ENGINE_MODEL_H_
#define KP_RUNTIME_ENGINE_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "runtime/engine/attention.h"
#include "runtime/engine/config.h"
#include "runtime/engine/layers.h"
#include "runtime/engine/linear.h"
#include "runtime/engine/recompute.h"

namespace kp::engine {

// What makes long sequences fit on one device (training.offload_checkpoints,
// training.mlp_tile_tokens; configs/README.md).
struct LongContextOptions {
  // With full checkpointing: the blocks' saved inputs wait in pinned host
  // memory between forward and backward (all but the last block's).
  bool offload_checkpoints = false;
  // > 0: the MLP branch (norm, gate/up, SwiGLU, down, residual add) runs this
  // many positions at a time, forward and backward (TiledCall).
  int64_t mlp_tile_tokens = 0;
};

class Block : public torch::nn::Module {
 public:
  Block(int index, const ModelConfig& config, LinearFactory& linear, LinearContext& context,
        Attention* attention);

  // x: [B, T, d] in the compute dtype.
  // mlp_tile_tokens and offload: see LongContextOptions (offload applies to
  // kFull only).
  at::Tensor Forward(const at::Tensor& x, const RopeTable& rope, const AttentionContext& actx,
                     ActivationCheckpointing checkpointing, int64_t mlp_tile_tokens = 0,
                     const CheckpointOffload& offload = {});

  // The two residual branches (without the residual add), for tests.
  at::Tensor AttentionBranch(const at::Tensor& x, const RopeTable& rope,
                             const AttentionContext& actx);
  at::Tensor MlpBranch(const at::Tensor& x);

 private:
  std::vector<at::Tensor> Params(const std::string& prefix) const;
  std::vector<at::Tensor> MlpParams() const;
  // h + MlpBranch(h), in tiles of `tile` positions when tile > 0
  // (reuse_grad: see TiledCall's reuse_grad_out).
  at::Tensor MlpResidual(const at::Tensor& h, int64_t tile, bool reuse_grad = false);

  int64_t n_heads_, n_kv_heads_, head_dim_;
  bool fused_kernels_;  // ModelConfig::fused_kernels
  Attention* attention_;
  std::shared_ptr<RMSNormLayer> attn_norm_, mlp_norm_;
  std::shared_ptr<LinearLayer> qkv_, out_, gate_up_, down_;
};

class Transformer : public torch::nn::Module {
 public:
  Transformer(const ModelConfig& config, LinearFactory& linear, LinearContext& context,
              std::shared_ptr<Attention> attention,
              ActivationCheckpointing checkpointing = ActivationCheckpointing::kNone);

  // tokens: int64 [B, T]. Returns the final-normed hidden states [B, T, d].
  // actx.positions must hold the T positions (see WholeSequenceContext).
  at::Tensor Hidden(const at::Tensor& tokens, const AttentionContext& actx);

  // Mean next-token cross-entropy: inputs/targets int64 [B, T]. The LM head
  // and the loss run chunk_tokens rows at a time (ChunkedCrossEntropy).
  at::Tensor Loss(const at::Tensor& inputs, const at::Tensor& targets,
                  const AttentionContext& actx, int64_t chunk_tokens);

  // Full logits [B, T, V] (evaluation and tests; training uses Loss).
  at::Tensor Logits(const at::Tensor& tokens, const AttentionContext& actx);

  // Parameters that get weight decay (the projection matrices) and those
  // that do not (norm gains and the embedding, tied or not).
  std::vector<at::Tensor> DecayParameters() const;
  std::vector<at::Tensor> NoDecayParameters() const;

  // Parameter count, optionally without the input embedding (the count the
  // FLOP formula uses: a lookup is not a matmul). A tied head counts once.
  int64_t NumParameters(bool include_embedding = true) const;

  const ModelConfig& config() const { return config_; }
  at::ScalarType compute_dtype() const { return compute_dtype_; }
  void set_checkpointing(ActivationCheckpointing c) { checkpointing_ = c; }
  void set_long_context(const LongContextOptions& o) { long_context_ = o; }
  const LongContextOptions& long_context() const { return long_context_; }

 private:
  ModelConfig config_;
  at::ScalarType compute_dtype_;
  ActivationCheckpointing checkpointing_;
  LongContextOptions long_context_;
  std::shared_ptr<Attention> attention_;
  at::Tensor embedding_;  // [V, d]
  std::vector<std::shared_ptr<Block>> blocks_;
  std::shared_ptr<RMSNormLayer> final_norm_;
  std::shared_ptr<LinearLayer> head_;
};

// An AttentionContext for a whole (unsharded) causal sequence of length T.
AttentionContext WholeSequenceContext(int64_t seq_len, at::Device device);

}  // namespace kp::engine

#endif  // KP_RUNTIME_ENGINE_MODEL_H_
