#include "runtime/worker/fault/hang_guard.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "runtime/comm/log.h"

#include "runtime/worker/fault/exit_codes.h"

namespace kp::worker::fault {

HangGuard::HangGuard(comm::Communicator* comm, Options options) : comm_(comm), options_(std::move(options)) {
  if (!options_.on_hang) {
    const auto after = options_.exit_after;
    options_.on_hang = [after] {
      FlushLogsAndExit(kExitCollectiveHung,
                       absl::StrCat("a collective hung and the process did not end within ", after.count(),
                                    " ms of the communicator abort: exiting with code ", kExitCollectiveHung));
    };
  }
  watchdog_.Watch(comm_);
  thread_ = std::thread([this] { Loop(); });
}

HangGuard::~HangGuard() {
  quit_ = true;
  thread_.join();
  watchdog_.Unwatch(comm_);
}

void HangGuard::Loop() {
  std::optional<std::chrono::steady_clock::time_point> aborted_at;
  while (!quit_.load()) {
    std::this_thread::sleep_for(options_.poll);
    if (!aborted_at && aborted()) {
      aborted_at = std::chrono::steady_clock::now();
      comm::LogError(absl::StrCat("collective timed out on rank ", comm_->rank(), "/", comm_->size(), " (",
                                  comm_->backend(), " backend, timeout ", comm_->timeout().count(),
                                  " ms): communicator aborted; the run ends with exit code ", kExitCollectiveHung));
    }
    if (aborted_at && std::chrono::steady_clock::now() - *aborted_at >= options_.exit_after) {
      options_.on_hang();
      return;
    }
  }
}

}  // namespace kp::worker::fault
