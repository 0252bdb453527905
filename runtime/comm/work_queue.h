// Runs a communicator's calls one at a time, in the order they were issued, on
// a worker thread of its own: async calls overlap the caller, and sync calls
// are async calls plus Wait(), so both kinds stay ordered with each other (a
// requirement of every backend: all ranks issue collectives in one order).
//
// Abort() completes every queued and running call at once with its reason, and
// every later call with ABORTED: a caller never waits on a hung transport. The
// running function keeps its tensors alive (it owns them) and ends at its own
// transport timeout; if it is still stuck when the queue is destroyed after an
// Abort, the worker thread is detached instead of joined.
#ifndef KP_RUNTIME_COMM_WORK_QUEUE_H_
#define KP_RUNTIME_COMM_WORK_QUEUE_H_

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "runtime/comm/communicator.h"
#include "runtime/common/status.h"

namespace kp::comm {

// A Work that is already over (argument errors, calls after Abort).
std::unique_ptr<Work> CompletedWork(absl::Status status);

class WorkQueue {
 public:
  WorkQueue();
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // `op` names the call in errors and for the watchdog.
  std::unique_ptr<Work> Enqueue(std::string op, std::function<absl::Status()> fn);

  // First reason wins; later calls are ignored.
  void Abort(const absl::Status& reason);
  bool aborted() const;
  // The abort reason, OK when not aborted.
  absl::Status abort_status() const;

  // The running call and when it started.
  std::optional<PendingOp> Running() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
  std::thread thread_;
};

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_WORK_QUEUE_H_
