#include "runtime/worker/fault/exit_codes.h"

#include <unistd.h>

#include <cstdio>

#include <spdlog/spdlog.h>

namespace kp::worker::fault {

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
    case absl::StatusCode::kCancelled:
      return kExitOk;
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
      return kExitCollectiveHung;
    case absl::StatusCode::kInvalidArgument:
      return kExitBadConfig;
    default:
      return kExitFailed;
  }
}

void FlushLogsAndExit(int code, const std::string& message) {
  spdlog::error("{}", message);
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { l->flush(); });
  std::fflush(stdout);
  std::fflush(stderr);
  ::_exit(code);
}

}  // namespace kp::worker::fault
