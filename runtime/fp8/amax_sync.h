// Data parallelism and FP8: every rank sees different activations and
// gradients, so their amaxes differ. Reducing them (max) across the ranks
// once a step gives every rank the same scales (the same quantisation of the
// replicated weights, and one FP8 state for the checkpoint that rank 0
// writes and every rank restores). One collective for all layers.
#ifndef KP_RUNTIME_FP8_AMAX_SYNC_H_
#define KP_RUNTIME_FP8_AMAX_SYNC_H_

#include "runtime/comm/communicator.h"
#include "runtime/common/status.h"
#include "runtime/fp8/fp8_linear.h"

namespace kp::fp8 {

// Max-reduces the amax history (all columns, all roles; this step's amax is
// column 0, and with grad_accum > 1 its earlier micro-batches' are the next
// columns) of every FP8 layer of `session` over `comm`. Call on every rank after the backward pass
// and before the next forward (e.g. beside the gradient all-reduce). Layers
// must be created in the same order on every rank (the model's order).
absl::Status AllReduceAmax(Fp8Session& session, comm::Communicator& comm);

}  // namespace kp::fp8

#endif  // KP_RUNTIME_FP8_AMAX_SYNC_H_
