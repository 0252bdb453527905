// Trading compute for memory with custom autograd Functions (libtorch C++ has
// no torch.utils.checkpoint):
//  - CheckpointedCall runs fn(x) without keeping its activations and runs it
//    again, with grad, in backward (activation checkpointing of a block);
//  - ChunkedCrossEntropy computes the loss of head(hidden) a chunk of tokens
//    at a time, forward and backward, so the [tokens, vocab] logits never
//    exist at once;
//  - TiledCall runs a position-wise fn (the MLP) over tiles of the sequence,
//    forward and backward, so fn's wide activations exist for one tile only.
// Both recompute exactly what the forward computed: fn must be deterministic
// (no dropout, no RNG) and must not change module state.
#ifndef KP_RUNTIME_ENGINE_RECOMPUTE_H_
#define KP_RUNTIME_ENGINE_RECOMPUTE_H_

#include <cstdint>
#include <functional>
#include <vector>

#include <memory>

#include <ATen/core/Tensor.h>

#include "runtime/engine/offload.h"

namespace kp::engine {

using TensorFn = std::function<at::Tensor(const at::Tensor&)>;

// Where a checkpointed call keeps its saved input (default: on the device).
struct CheckpointOffload {
  std::shared_ptr<ActivationOffloader> offloader;  // null: no offloading
  bool stash = false;           // keep x in the offloader instead of the graph
  int64_t prefetch_slot = -1;   // slot to start fetching back when this call's
                                // backward begins (the previous block's input)
  int64_t* stashed_slot = nullptr;  // receives x's slot (-1 when not stashed)
};

// Returns fn(x). `params` are the tensors fn reads that need gradients (the
// block's parameters): their gradients come out of the recomputation. Under
// no-grad mode it simply calls fn.
at::Tensor CheckpointedCall(const TensorFn& fn, const at::Tensor& x,
                            const std::vector<at::Tensor>& params,
                            const CheckpointOffload& offload = {});

// Returns fn(x) for a position-wise fn (row s of the output depends only on
// row s of the input along `dim`, e.g. norm + MLP over [B, T, d] with dim 1),
// computed `tile` positions at a time. Only x is kept for backward, which
// recomputes and backpropagates one tile at a time; `params` as above.
// reuse_grad_out: backward may write x's gradient over the incoming
// gradient (tile by tile, each tile after it is read), saving one
// activation-sized buffer. Only for callers that know nothing else reads
// that gradient (the output of a fully checkpointed block's recomputation).
at::Tensor TiledCall(const TensorFn& fn, const at::Tensor& x,
                     const std::vector<at::Tensor>& params, int64_t dim, int64_t tile,
                     bool reuse_grad_out = false);

// mean over the N rows of cross_entropy(head(hidden[n]), targets[n]).
// hidden: [N, d]; targets: int64 [N]; head maps [n, d] -> [n, V] logits
// (any float dtype; the softmax is taken in at least fp32); head_params are
// its weights. chunk_tokens rows at a time. fused: CUDA bf16 logits use the
// fused loss kernel (FusedCrossEntropySum, fused_ops.h), which overwrites
// the logits in backward, so head's backward must not need its output.
at::Tensor ChunkedCrossEntropy(const at::Tensor& hidden, const at::Tensor& targets,
                               const TensorFn& head, const std::vector<at::Tensor>& head_params,
                               int64_t chunk_tokens, bool fused = false);

}  // namespace kp::engine

#endif  // KP_RUNTIME_ENGINE_RECOMPUTE_H_
