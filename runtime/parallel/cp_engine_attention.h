// Context-parallel attention behind the engine's Attention seam
// (runtime/engine/attention.h): the model calls Forward on its local zigzag
// shard exactly as it calls the local attention on a whole sequence.
#ifndef KP_RUNTIME_PARALLEL_CP_ENGINE_ATTENTION_H_
#define KP_RUNTIME_PARALLEL_CP_ENGINE_ATTENTION_H_

#include <memory>

#include "absl/status/status.h"
#include "runtime/comm/communicator.h"
#include "runtime/engine/attention.h"
#include "runtime/parallel/cp_options.h"

namespace kp::parallel {

// comm: the CP group (size cp; must outlive the attention and every backward
// through it). With cp = 1 Forward is the engine's local attention itself.
// Forward requires context.layout == kZigzag (or kWhole with cp = 1),
// context.cp_size == comm->size(), context.cp_rank == comm->rank(), and
// context.positions equal to the zigzag positions; otherwise, or on a
// communication failure, it throws c10::Error naming the cause (the seam
// returns a tensor). Call ValidateCpAttentionContext first to get a Status.
std::unique_ptr<engine::Attention> MakeContextParallelAttention(comm::Communicator* comm,
                                                                const CpOptions& options);

absl::Status ValidateCpAttentionContext(const engine::AttentionContext& context,
                                        const comm::Communicator* comm);

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_CP_ENGINE_ATTENTION_H_
