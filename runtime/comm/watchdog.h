// Aborts communicators whose calls hang. Every backend bounds its own waits,
// but a CUDA kernel waiting on a dead peer never returns by itself: a thread
// outside the call must notice and call Abort() (ncclCommAbort for NCCL). One
// Watchdog per process can watch all of its communicators.
//
// A communicator is aborted when OldestPendingOp() has been running longer
// than its timeout() plus `grace`; its pending calls then end with
// DEADLINE_EXCEEDED naming the call, the rank and the timeout.
#ifndef KP_RUNTIME_COMM_WATCHDOG_H_
#define KP_RUNTIME_COMM_WATCHDOG_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/comm/communicator.h"

namespace kp::comm {

class Watchdog {
 public:
  struct Options {
    std::chrono::milliseconds poll{std::chrono::milliseconds(100)};
    // Beyond the communicator's timeout, so that a backend's own timeout
    // (with its more precise message) normally fires first.
    std::chrono::milliseconds grace{std::chrono::milliseconds(200)};
  };
  Watchdog() : Watchdog(Options{}) {}
  explicit Watchdog(Options options);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Watches `comm` (not owned) until Unwatch; Unwatch before destroying it.
  void Watch(Communicator* comm);
  void Unwatch(Communicator* comm);

  // How many communicators this watchdog has started to abort. Counted
  // before Abort() runs: ncclCommAbort can block until the communicator's
  // stream drains (seen on an H100 with a stream held by a host callback),
  // and the decision, not the teardown, is what the timeout bounds.
  int aborted_count() const;

  // Unwatches on destruction.
  class Scoped {
   public:
    Scoped(Watchdog* w, Communicator* c) : w_(w), c_(c) { w_->Watch(c_); }
    ~Scoped() { w_->Unwatch(c_); }
    Scoped(const Scoped&) = delete;
    Scoped& operator=(const Scoped&) = delete;

   private:
    Watchdog* w_;
    Communicator* c_;
  };

 private:
  void Loop();
  void CheckOnceLocked();

  Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::vector<Communicator*> watched_;
  std::vector<Communicator*> already_aborted_;
  std::atomic<int> aborted_{0};
  std::thread thread_;
};

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_WATCHDOG_H_
