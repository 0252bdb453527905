#include "runtime/comm/watchdog.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/comm/log.h"

namespace kp::comm {

Watchdog::Watchdog(Options options) : options_(options) {
  thread_ = std::thread([this] { Loop(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Watchdog::Watch(Communicator* comm) {
  std::lock_guard<std::mutex> lock(mu_);
  watched_.push_back(comm);
}

void Watchdog::Unwatch(Communicator* comm) {
  // Holding mu_ also waits out a pass that is looking at `comm`.
  std::lock_guard<std::mutex> lock(mu_);
  watched_.erase(std::remove(watched_.begin(), watched_.end(), comm), watched_.end());
  already_aborted_.erase(std::remove(already_aborted_.begin(), already_aborted_.end(), comm),
                         already_aborted_.end());
}

int Watchdog::aborted_count() const {
  // Lock-free: the watchdog thread holds mu_ for as long as Abort() takes.
  return aborted_.load();
}

void Watchdog::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, options_.poll, [&] { return stop_; });
    if (!stop_) CheckOnceLocked();
  }
}

void Watchdog::CheckOnceLocked() {
  const auto now = std::chrono::steady_clock::now();
  for (Communicator* c : watched_) {
    if (std::find(already_aborted_.begin(), already_aborted_.end(), c) != already_aborted_.end()) {
      continue;
    }
    const std::optional<PendingOp> op = c->OldestPendingOp();
    if (!op) continue;
    const auto age = std::chrono::duration_cast<std::chrono::milliseconds>(now - op->started);
    if (age <= c->timeout() + options_.grace) continue;
    const absl::Status reason = absl::DeadlineExceededError(absl::StrCat(
        c->backend(), " ", op->op, " on rank ", c->rank(), " of ", c->size(), " pending for ",
        age.count(), " ms, over the timeout of ", c->timeout().count(),
        " ms: the watchdog aborted the communicator"));
    LogError(std::string(reason.message()));
    already_aborted_.push_back(c);
    ++aborted_;
    c->Abort(reason);
  }
}

}  // namespace kp::comm
