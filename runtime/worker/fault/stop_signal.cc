#include "runtime/worker/fault/stop_signal.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "runtime/worker/fault/exit_codes.h"

namespace kp::worker::fault {
namespace {

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

StopSignal::StopSignal(Options options) : options_(std::move(options)) {
  if (!options_.on_grace_expired) {
    const auto grace = options_.grace;
    options_.on_grace_expired = [grace] {
      FlushLogsAndExit(kExitStopTimedOut, "no clean stop within " + std::to_string(grace.count()) +
                                              " ms of the stop request (a collective may be hung): exiting with "
                                              "code " + std::to_string(kExitStopTimedOut) +
                                              " without a new checkpoint");
    };
  }
  if (options_.handle_signals) {
    sigset_t set = StopSignals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
  }
  thread_ = std::thread([this] { Loop(); });
}

StopSignal::~StopSignal() {
  quit_ = true;
  thread_.join();
}

void StopSignal::Request(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (requested_.load()) return;
    requested_at_ = std::chrono::steady_clock::now();
    requested_ = true;
  }
  spdlog::warn("{}: stopping at the next step boundary with a checkpoint (grace {} ms)", why,
               options_.grace.count());
}

void StopSignal::Done() { done_ = true; }

void StopSignal::Loop() {
  const sigset_t set = StopSignals();
  const timespec poll{0, 50'000'000};
  while (!quit_.load()) {
    if (options_.handle_signals) {
      siginfo_t info;
      const int sig = sigtimedwait(&set, &info, &poll);
      if (sig > 0) Request(std::string("signal ") + (sigabbrev_np(sig) ? sigabbrev_np(sig) : "?"));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (requested_.load() && !done_.load()) {
      std::chrono::steady_clock::time_point at;
      {
        std::lock_guard<std::mutex> lock(mu_);
        at = requested_at_;
      }
      if (std::chrono::steady_clock::now() - at >= options_.grace) {
        done_ = true;
        options_.on_grace_expired();
      }
    }
  }
}

}  // namespace kp::worker::fault
