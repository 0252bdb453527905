// The last line of defence against a hung collective: the communicator
// watchdog (runtime/comm/watchdog.h) aborts a communicator whose call is
// past its timeout, which makes the pending call return DEADLINE_EXCEEDED
// and the run end with kExitCollectiveHung. If the process is still alive
// `exit_after` later (a kernel that ignores the abort, a thread stuck
// outside the communicator), HangGuard logs why, flushes the logs and
// _exits with kExitCollectiveHung: a worker never hangs forever, and never
// dies by abort() with unflushed logs.
#ifndef KP_RUNTIME_WORKER_FAULT_HANG_GUARD_H_
#define KP_RUNTIME_WORKER_FAULT_HANG_GUARD_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "runtime/comm/watchdog.h"

namespace kp::worker::fault {

class HangGuard {
 public:
  struct Options {
    std::chrono::milliseconds exit_after{std::chrono::milliseconds(10000)};
    std::chrono::milliseconds poll{std::chrono::milliseconds(100)};
    // Default: log, flush, _exit(kExitCollectiveHung). Tests replace it.
    std::function<void()> on_hang;
  };
  // Watches `comm` (not owned; must outlive the guard) with its own watchdog.
  HangGuard(comm::Communicator* comm, Options options);
  HangGuard(comm::Communicator* comm) : HangGuard(comm, Options{}) {}
  ~HangGuard();
  HangGuard(const HangGuard&) = delete;
  HangGuard& operator=(const HangGuard&) = delete;

  bool aborted() const { return watchdog_.aborted_count() > 0; }

 private:
  void Loop();

  comm::Communicator* comm_;
  Options options_;
  comm::Watchdog watchdog_;
  std::atomic<bool> quit_{false};
  std::thread thread_;
};

}  // namespace kp::worker::fault

#endif  // KP_RUNTIME_WORKER_FAULT_HANG_GUARD_H_
