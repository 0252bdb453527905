// SIGTERM / SIGINT for a training worker: ask the loop to stop at the next
// step boundary (StopAtStepBoundary checkpoints there and ends the run), and,
// if that has not happened within `grace`, flush the logs and _exit with
// kExitStopTimedOut. The agent SIGKILLs a worker after its own grace period
// (--stop_grace_ms, 10 s by default): keep this one shorter so the worker
// always gets to say why it stopped. Slurm's scancel sends SIGTERM too.
//
// Signals are handled on a thread of ours (sigtimedwait), never in a signal
// handler, so logging is safe; Install() must run in main before any other
// thread starts, because threads inherit the blocked signal mask.
#ifndef KP_RUNTIME_WORKER_FAULT_STOP_SIGNAL_H_
#define KP_RUNTIME_WORKER_FAULT_STOP_SIGNAL_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace kp::worker::fault {

class StopSignal {
 public:
  struct Options {
    std::chrono::milliseconds grace{std::chrono::milliseconds(8000)};
    // What to do when the grace period runs out; the default flushes spdlog
    // and calls _exit(kExitStopTimedOut). Tests replace it.
    std::function<void()> on_grace_expired;
    // Handle the process's signals (false: tests call Request()).
    bool handle_signals = true;
  };

  explicit StopSignal(Options options);
  ~StopSignal();
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;

  // The flag the training loop polls.
  const std::atomic<bool>* flag() const { return &requested_; }
  bool requested() const { return requested_.load(); }
  // As if a signal arrived (tests, or a coordinator request).
  void Request(const std::string& why);
  // The run ended (cleanly or not): no forced exit any more.
  void Done();

 private:
  void Loop();

  Options options_;
  std::atomic<bool> requested_{false};
  std::atomic<bool> done_{false};
  std::atomic<bool> quit_{false};
  std::mutex mu_;
  std::chrono::steady_clock::time_point requested_at_;
  std::thread thread_;
};

}  // namespace kp::worker::fault

#endif  // KP_RUNTIME_WORKER_FAULT_STOP_SIGNAL_H_
