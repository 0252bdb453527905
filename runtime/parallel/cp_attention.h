// Context-parallel causal attention: each rank of a CP group holds a zigzag
// shard of the sequence (zigzag.h) of q, k and v, and gets its shard of the
// attention output; differentiable (gradients reach q, k, v of every rank).
//
// Modes (mode_select.h picks one under CpMode::kAuto):
//   ring       K/V blocks pass around the ring with SendRecvAsync, the next
//              transfer overlapped with attention on the block in hand;
//              partial outputs merged with the LSE in float32; in the
//              backward dK/dV travel around the ring back to their owners.
//   allgather  K/V (n_kv_heads wide, never expanded) all-gathered once; each
//              rank attends its two zigzag chunks to the K/V they see;
//              dK/dV reduce-scattered (float32).
//   ulysses    all-to-all over heads (needs n_heads % cp == 0): each rank
//              runs full-sequence causal attention for n_heads/cp heads.
// cp = 1 (or comm == nullptr) calls local causal attention directly.
//
// This is the function the engine's Attention implementation calls. Errors
// found before any work (shapes, layout, mode) and communication failures in
// the forward come back as a Status; a communication failure during the
// backward throws c10::Error naming the step, rank and peer (autograd offers
// no other channel).
#ifndef KP_RUNTIME_PARALLEL_CP_ATTENTION_H_
#define KP_RUNTIME_PARALLEL_CP_ATTENTION_H_

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "runtime/comm/communicator.h"
#include "runtime/parallel/cp_options.h"

namespace kp::parallel {

// q: [B, H, T/cp, D]; k, v: [B, Hkv, T/cp, D]; this rank's zigzag shards
// (rank = comm->rank()). Returns this rank's shard of the output, q's dtype.
// comm must outlive the backward pass.
absl::StatusOr<at::Tensor> ContextParallelAttention(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v,
                                                    comm::Communicator* comm,
                                                    const CpOptions& options);

// Forward and backward in one call, without autograd: out and the gradients
// of q, k, v for the given grad of out. For several ranks of one process on
// one GPU (tests, simulations): autograd runs all CUDA backward work on a
// single device thread, so ranks that exchange data inside their backward
// would wait on each other there. Same modes, same numerics.
struct CpForwardBackwardResult {
  at::Tensor out, dq, dk, dv;
};
absl::StatusOr<CpForwardBackwardResult> ContextParallelAttentionForwardBackward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dout,
    comm::Communicator* comm, const CpOptions& options);

// The mode ContextParallelAttention would run for these local shapes.
absl::StatusOr<CpModeChoice> ResolveCpMode(const at::Tensor& q, const at::Tensor& k, int cp,
                                           const CpOptions& options, bool log);

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_CP_ATTENTION_H_
