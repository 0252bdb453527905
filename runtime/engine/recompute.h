// Trading compute for memory with custom autograd Functions (libtorch C++ has
// no torch.utils.checkpoint):
//  - CheckpointedCall runs fn(x) without keeping its activations and runs it
//    again, with grad, in backward (activation checkpointing of a block);
//  - ChunkedCrossEntropy computes the loss of head(hidden) a chunk of tokens
//    at a time, forward and backward, so the [tokens, vocab] logits never
//    exist at once.
// Both recompute exactly what the forward computed: fn must be deterministic
// (no dropout, no RNG) and must not change module state.
#ifndef KP_RUNTIME_ENGINE_RECOMPUTE_H_
#define KP_RUNTIME_ENGINE_RECOMPUTE_H_

#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>

namespace kp::engine {

using TensorFn = std::function<at::Tensor(const at::Tensor&)>;

// Returns fn(x). `params` are the tensors fn reads that need gradients (the
// block's parameters): their gradients come out of the recomputation. Under
// no-grad mode it simply calls fn.
at::Tensor CheckpointedCall(const TensorFn& fn, const at::Tensor& x,
                            const std::vector<at::Tensor>& params);

// mean over the N rows of cross_entropy(head(hidden[n]), targets[n]).
// hidden: [N, d]; targets: int64 [N]; head maps [n, d] -> [n, V] logits
// (any float dtype; the softmax is taken in at least fp32); head_params are
// its weights. chunk_tokens rows at a time.
at::Tensor ChunkedCrossEntropy(const at::Tensor& hidden, const at::Tensor& targets,
                               const TensorFn& head, const std::vector<at::Tensor>& head_params,
                               int64_t chunk_tokens);

}  // namespace kp::engine

#endif  // KP_RUNTIME_ENGINE_RECOMPUTE_H_
