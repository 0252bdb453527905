// The GPU backend: NCCL over CUDA tensors of one device.
//
// Ranks meet through the Store: rank 0 publishes ncclGetUniqueId under
// "<prefix>/nccl_id", the others read it. Communicators are non-blocking
// (config.blocking = 0): every NCCL call that reports ncclInProgress is polled
// with ncclCommGetAsyncError up to the timeout, and Abort() (from the
// Watchdog, say) calls ncclCommAbort, which ends kernels stuck on a dead peer.
//
// Streams: collectives run on a dedicated stream of the device, ordered after
// the caller's current stream when issued; Work::Wait() orders the caller's
// current stream after the collective (no host wait, as in PyTorch). Done()
// asks the event. Barrier() is the exception: it waits on the host.
// OldestPendingOp() reports the oldest collective whose end event has not
// fired, so a Watchdog can abort a kernel that never finishes.
//
// Shrink (NCCL >= 2.27.3): ncclCommShrink with NCCL_SHRINK_ABORT over the
// survivors, after ncclCommRevoke (NCCL >= 2.28.7) where the headers have it,
// on a communicator that was revoked (revoke_on_abort) or never aborted; one
// that ncclCommAbort freed cannot shrink (FAILED_PRECONDITION).
//
// NVLink multicast (NVLS) stays off: unless NCCL_NVLS_ENABLE is already set,
// it is set to 0 before the first communicator is created.
#ifndef KP_RUNTIME_COMM_NCCL_COMMUNICATOR_H_
#define KP_RUNTIME_COMM_NCCL_COMMUNICATOR_H_

#include <chrono>
#include <memory>

#include "runtime/comm/communicator.h"
#include "runtime/comm/store.h"

namespace kp::comm {

struct NcclOptions {
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  // CUDA device index; -1 = the current device.
  int device = -1;
  // Abort() revokes the communicator (ncclCommRevoke: in-flight kernels stop,
  // the handle stays valid) instead of freeing it with ncclCommAbort, so that
  // Shrink() can build the survivors' communicator from it afterwards. Needs
  // NCCL >= 2.28.7 in the headers; creation fails with FAILED_PRECONDITION
  // otherwise.
  bool revoke_on_abort = false;
};

// Collective over `world` ranks; `store` is only used during this call.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(int rank, int world,
                                                                     Store* store,
                                                                     const NcclOptions& options);

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_NCCL_COMMUNICATOR_H_
