// The data plane seam: collectives and point-to-point transfers over a group
// of ranks. Backends: NCCL (CUDA tensors), Gloo (CPU tensors, TCP; CI runs
// multi-rank code through it) and an in-process fake (threads as ranks).
//
// Every call may fail: a peer that died or hung shows up as DEADLINE_EXCEEDED
// after the communicator's timeout, and every call after Abort() returns
// ABORTED. Nothing here blocks forever; the fault-tolerance layer relies on it.
#ifndef KP_RUNTIME_COMM_COMMUNICATOR_H_
#define KP_RUNTIME_COMM_COMMUNICATOR_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/common/status.h"

namespace kp::comm {

enum class ReduceOp { kSum, kAvg, kMax, kMin };

// A transfer in flight. Wait() returns when it completed (for NCCL: when the
// work is ordered before later work on the caller's current CUDA stream), or
// with the error that ended it.
class Work {
 public:
  virtual ~Work() = default;
  virtual absl::Status Wait() = 0;
  // True once Wait() would return without blocking.
  virtual bool Done() = 0;
};

// The call a communicator has been busy with the longest (for the watchdog).
struct PendingOp {
  std::string op;  // "AllReduce", "SendRecv", ...
  std::chrono::steady_clock::time_point started;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "nccl", "gloo" or "fake".
  virtual std::string backend() const = 0;

  // In place; kAvg divides by size(). Tensors must be contiguous.
  virtual absl::Status AllReduce(at::Tensor& tensor, ReduceOp op) = 0;
  virtual std::unique_ptr<Work> AllReduceAsync(at::Tensor tensor, ReduceOp op) = 0;

  // output holds size() copies of input's shape along a new leading layout:
  // output.numel() == size() * input.numel(), rank r's input at slice r.
  virtual absl::Status AllGather(const at::Tensor& input, at::Tensor& output) = 0;
  virtual std::unique_ptr<Work> AllGatherAsync(at::Tensor input, at::Tensor output) = 0;

  // input.numel() == size() * output.numel(); rank r receives the reduction of
  // everyone's slice r.
  virtual absl::Status ReduceScatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) = 0;

  virtual absl::Status Broadcast(at::Tensor& tensor, int root) = 0;

  // Sends `send` to rank dst and receives `recv` from rank src at the same
  // time (the step of a ring). Either may be undefined to skip that side.
  virtual std::unique_ptr<Work> SendRecvAsync(at::Tensor send, int dst, at::Tensor recv,
                                              int src) = 0;

  virtual absl::Status Barrier() = 0;

  // A sub-communicator of the ranks that pass the same color, ordered by key
  // (as MPI_Comm_split / ncclCommSplit). Collective over this communicator.
  // A rank that passes a negative color is in no part: it still takes part in
  // the call and gets OK with a null pointer ("not a member").
  virtual absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) = 0;

  // Ends every pending and future call with ABORTED (called by the watchdog or
  // the fault-tolerance layer when a peer is gone). Safe from any thread.
  virtual void Abort(const absl::Status& reason) = 0;

  // The survivors of a failure: a new communicator over this one's ranks
  // minus `exclude` (ranks of this communicator, any order), renumbered
  // densely in the old order (ShrinkRankMap in shrink.h). Collective over the
  // survivors only: the excluded ranks never call it, and every survivor
  // passes the same list (AgreeOnSurvivors in shrink.h finds it through the
  // store). Works on a communicator that failed or was aborted (that is what
  // it is for); this one is unusable afterwards. A rank that is itself in
  // `exclude` gets INVALID_ARGUMENT. Backends without it: UNIMPLEMENTED.
  virtual absl::StatusOr<std::unique_ptr<Communicator>> Shrink(const std::vector<int>& exclude) {
    (void)exclude;
    return absl::UnimplementedError(backend() + " communicator: Shrink is not supported");
  }

  virtual std::chrono::milliseconds timeout() const = 0;

  // The oldest call that started and has not completed, if any. A Watchdog
  // polls this and calls Abort() once it is older than timeout() (for NCCL a
  // kernel that never ends cannot time out by itself).
  virtual std::optional<PendingOp> OldestPendingOp() { return std::nullopt; }
};

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_COMMUNICATOR_H_
