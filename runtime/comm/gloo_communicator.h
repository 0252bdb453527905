// The CPU backend: Gloo (Debian's libgloo-dev) over TCP. Ranks meet through a
// kp Store (each publishes its listening address; gloo connects a full mesh).
// CI runs multi-process training through it exactly as GPUs run NCCL.
//
// Timeouts: every call carries the communicator's timeout into gloo; a peer
// that does not answer in time, or whose connection drops (it exited), ends
// the call with DEADLINE_EXCEEDED naming the call, this rank and the timeout.
// After such a failure the communicator is unusable (gloo's pairs are broken):
// later calls return ABORTED; build a new one.
//
// CPU tensors of float32, float64, bfloat16, float16, int32 and int64 (the
// reductions are our own, so bf16 works although gloo has no bf16 type).
#ifndef KP_RUNTIME_COMM_GLOO_COMMUNICATOR_H_
#define KP_RUNTIME_COMM_GLOO_COMMUNICATOR_H_

#include <chrono>
#include <memory>
#include <string>

#include "runtime/comm/communicator.h"
#include "runtime/comm/store.h"

namespace kp::comm {

struct GlooOptions {
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  // The address peers reach this rank at: loopback on one host, the node's
  // address across nodes.
  std::string hostname = "127.0.0.1";
};

// Collective over `world` ranks. `store` must outlive the communicator and
// every communicator Split() from it, and serve only this communicator's
// rendezvous (namespace several with PrefixStore).
absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(int rank, int world,
                                                                     Store* store,
                                                                     const GlooOptions& options);

// FAILED_PRECONDITION when gloo's symbols bind to libtorch's bundled copy
// instead of Debian's libgloo (a link-order problem; see the message).
// CreateGlooCommunicator checks this first.
absl::Status CheckGlooBinding();

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_GLOO_COMMUNICATOR_H_
