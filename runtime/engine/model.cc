#include "runtime/engine/model.h"

#include <cmath>
#include <set>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/modules/container/modulelist.h>

#include "runtime/engine/fused_ops.h"
#include "runtime/engine/recompute.h"

namespace kp::engine {

Block::Block(int index, const ModelConfig& c, LinearFactory& linear, LinearContext& context,
             Attention* attention)
    : n_heads_(c.n_heads), n_kv_heads_(c.n_kv_heads), head_dim_(c.head_dim()),
      fused_kernels_(c.fused_kernels), attention_(attention) {
  const std::string p = "blocks." + std::to_string(index) + ".";
  // GPT-2 / Megatron init: residual-writing projections scaled by 1/sqrt(2L)
  // so the residual stream's variance does not grow with depth.
  const double std_in = 0.02;
  const double std_out = 0.02 / std::sqrt(2.0 * static_cast<double>(c.n_layers));
  const int64_t qkv_out = (c.n_heads + 2 * c.n_kv_heads) * head_dim_;
  attn_norm_ = register_module("attn_norm", std::make_shared<RMSNormLayer>(c.d_model, c.norm_eps, context));
  qkv_ = register_module("qkv", linear.Create({p + "attn.qkv", c.d_model, qkv_out, false, std_in}, context));
  out_ = register_module("out", linear.Create({p + "attn.out", c.n_heads * head_dim_, c.d_model, false, std_out}, context));
  mlp_norm_ = register_module("mlp_norm", std::make_shared<RMSNormLayer>(c.d_model, c.norm_eps, context));
  gate_up_ = register_module("gate_up", linear.Create({p + "mlp.gate_up", c.d_model, 2 * c.ffn_hidden, false, std_in}, context));
  down_ = register_module("down", linear.Create({p + "mlp.down", c.ffn_hidden, c.d_model, false, std_out}, context));
}

at::Tensor Block::AttentionBranch(const at::Tensor& x, const RopeTable& rope,
                                  const AttentionContext& actx) {
  const int64_t b = x.size(0), t = x.size(1);
  at::Tensor qkv = qkv_->Forward(attn_norm_->Forward(x));
  // [B, T, (H + 2 Hkv) Dh] -> per head [B, heads, T, Dh], RoPE on q and k
  QkvHeads heads = SplitQkvWithRope(qkv, rope, n_heads_, n_kv_heads_, fused_kernels_);
  at::Tensor o = attention_->Forward(heads.q, heads.k, heads.v, actx);  // [B, H, T, Dh]
  o = o.transpose(1, 2).reshape({b, t, n_heads_ * head_dim_});
  return out_->Forward(o);
}

at::Tensor Block::MlpBranch(const at::Tensor& x) {
  return down_->Forward(
      SwiGluActivation(gate_up_->Forward(mlp_norm_->Forward(x)), fused_kernels_));
}

std::vector<at::Tensor> Block::Params(const std::string& prefix) const {
  std::vector<at::Tensor> out;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    if (item.key().rfind(prefix, 0) == 0) out.push_back(item.value());
  }
  return out;
}

std::vector<at::Tensor> Block::MlpParams() const {
  std::vector<at::Tensor> params = Params("mlp_norm.");
  for (const at::Tensor& p : Params("gate_up.")) params.push_back(p);
  for (const at::Tensor& p : Params("down.")) params.push_back(p);
  return params;
}

at::Tensor Block::MlpResidual(const at::Tensor& h, int64_t tile, bool reuse_grad) {
  if (tile <= 0) return h + MlpBranch(h);
  // Position-wise, so tiles along T are independent; the 2 x ffn_hidden wide
  // gate/up activations then exist for one tile at a time.
  return TiledCall([this](const at::Tensor& t) { return t + MlpBranch(t); }, h, MlpParams(),
                   /*dim=*/1, tile, reuse_grad);
}

at::Tensor Block::Forward(const at::Tensor& x, const RopeTable& rope, const AttentionContext& actx,
                          ActivationCheckpointing checkpointing, int64_t mlp_tile_tokens,
                          const CheckpointOffload& offload) {
  switch (checkpointing) {
    case ActivationCheckpointing::kNone: {
      at::Tensor h = x + AttentionBranch(x, rope, actx);
      return MlpResidual(h, mlp_tile_tokens);
    }
    case ActivationCheckpointing::kSelective: {
      // The MLP holds the widest activations (3 x ffn_hidden per token);
      // attention keeps its own (flash/cuDNN already store only out + lse).
      at::Tensor h = x + AttentionBranch(x, rope, actx);
      if (mlp_tile_tokens > 0) return MlpResidual(h, mlp_tile_tokens);  // tiles recompute
      return h + CheckpointedCall([this](const at::Tensor& in) { return MlpBranch(in); }, h,
                                  MlpParams());
    }
    case ActivationCheckpointing::kFull: {
      // Only the block's input survives forward (on the device or, with
      // offload, in host memory); the rest is recomputed.
      return CheckpointedCall(
          [this, rope, actx, mlp_tile_tokens](const at::Tensor& in) {
            at::Tensor h = in + AttentionBranch(in, rope, actx);
            // Its output is the recomputation's root: the incoming gradient
            // is the block's own (nothing else reads it), so the MLP's
            // backward may overwrite it with h's gradient (one [B, T, d]
            // buffer less while attention backpropagates).
            return MlpResidual(h, mlp_tile_tokens, /*reuse_grad=*/true);
          },
          x, parameters(/*recurse=*/true), offload);
    }
  }
  KP_CHECK(false);
  return {};
}

Transformer::Transformer(const ModelConfig& c, LinearFactory& linear, LinearContext& context,
                         std::shared_ptr<Attention> attention,
                         ActivationCheckpointing checkpointing)
    : config_(c), compute_dtype_(context.compute_dtype), checkpointing_(checkpointing),
      attention_(std::move(attention)) {
  embedding_ = register_parameter("embedding", InitNormal({c.vocab_size, c.d_model}, 0.02, context));
  // A ModuleList names them blocks.0, blocks.1, ... in parameter names.
  torch::nn::ModuleList list;
  for (int i = 0; i < c.n_layers; ++i) {
    blocks_.push_back(std::make_shared<Block>(i, c, linear, context, attention_.get()));
    list->push_back(blocks_.back());
  }
  register_module("blocks", list);
  final_norm_ = register_module("final_norm", std::make_shared<RMSNormLayer>(c.d_model, c.norm_eps, context));
  LinearSpec head{"lm_head", c.d_model, c.vocab_size, false, 0.02};
  if (c.tie_embeddings) head.shared_weight = embedding_;
  head_ = register_module("lm_head", linear.Create(head, context));
}

at::Tensor Transformer::Hidden(const at::Tensor& tokens, const AttentionContext& actx) {
  KP_CHECK(tokens.dim() == 2 && actx.positions.defined() && actx.positions.size(0) == tokens.size(1));
  at::Tensor x = at::embedding(embedding_, tokens).to(compute_dtype_);
  RopeTable rope = MakeRopeTable(actx.positions, config_.head_dim(), config_.rope_theta,
                                 RopeTableDtype(config_.fused_kernels, x.device(), compute_dtype_));
  // Offloading: block i's input goes to host memory in forward; block i's
  // backward fetches it and starts fetching block i-1's. The last block's
  // input stays: its backward comes first.
  std::shared_ptr<ActivationOffloader> offloader;
  if (long_context_.offload_checkpoints && checkpointing_ == ActivationCheckpointing::kFull &&
      at::GradMode::is_enabled()) {
    offloader = MakeActivationOffloader(x.device());
  }
  int64_t previous_slot = -1;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    CheckpointOffload offload;
    int64_t slot = -1;
    if (offloader) {
      offload.offloader = offloader;
      offload.stash = i + 1 < blocks_.size();
      offload.prefetch_slot = previous_slot;
      offload.stashed_slot = &slot;
    }
    x = blocks_[i]->Forward(x, rope, actx, checkpointing_, long_context_.mlp_tile_tokens, offload);
    previous_slot = slot;
  }
  return final_norm_->Forward(x);
}

at::Tensor Transformer::Loss(const at::Tensor& inputs, const at::Tensor& targets,
                             const AttentionContext& actx, int64_t chunk_tokens) {
  at::Tensor h = Hidden(inputs, actx);
  h = h.reshape({-1, h.size(-1)});
  std::vector<at::Tensor> head_params = config_.tie_embeddings
                                            ? std::vector<at::Tensor>{embedding_}
                                            : head_->parameters(/*recurse=*/true);
  LinearLayer* head = head_.get();
  return ChunkedCrossEntropy(
      h, targets.reshape({-1}), [head](const at::Tensor& x) { return head->Forward(x); },
      head_params, chunk_tokens, config_.fused_kernels);
}

at::Tensor Transformer::Logits(const at::Tensor& tokens, const AttentionContext& actx) {
  return head_->Forward(Hidden(tokens, actx));
}

std::vector<at::Tensor> Transformer::DecayParameters() const {
  std::vector<at::Tensor> out;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    if (item.value().dim() >= 2 && item.key() != "embedding") out.push_back(item.value());
  }
  return out;
}

std::vector<at::Tensor> Transformer::NoDecayParameters() const {
  std::vector<at::Tensor> out;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    if (item.value().dim() < 2 || item.key() == "embedding") out.push_back(item.value());
  }
  return out;
}

int64_t Transformer::NumParameters(bool include_embedding) const {
  int64_t n = 0;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    if (item.key() == "embedding" && !include_embedding) continue;
    n += item.value().numel();
  }
  // A tied head reuses the embedding matrix but is still a matmul.
  if (config_.tie_embeddings && !include_embedding) n += embedding_.numel();
  return n;
}

AttentionContext WholeSequenceContext(int64_t seq_len, at::Device device) {
  AttentionContext a;
  a.causal = true;
  a.positions = at::arange(seq_len, at::TensorOptions().dtype(at::kLong).device(device));
  a.layout = SequenceLayout::kWhole;
  a.global_seq_len = seq_len;
  return a;
}

}  // namespace kp::engine
