// kp-train's exit codes: the agent reports them and the coordinator's
// recovery policy (runtime/coordinator/recovery) reads them, so each cause
// has its own code.
#ifndef KP_RUNTIME_WORKER_FAULT_EXIT_CODES_H_
#define KP_RUNTIME_WORKER_FAULT_EXIT_CODES_H_

#include <string>

#include "runtime/common/status.h"

namespace kp::worker::fault {

inline constexpr int kExitOk = 0;               // done, or stopped by SIGTERM after a checkpoint
inline constexpr int kExitFailed = 1;           // anything else: worth a restart
inline constexpr int kExitBadConfig = 2;        // flags, config or checkpoint shape: a restart cannot fix it
inline constexpr int kExitCollectiveHung = 75;  // a collective timed out / was aborted (EX_TEMPFAIL)
inline constexpr int kExitStopTimedOut = 143;   // SIGTERM, and no clean stop within the grace period

// The exit code for RunTraining's result. CANCELLED is the clean stop after
// SIGTERM (StopAtStepBoundary); DEADLINE_EXCEEDED and ABORTED come from
// communicators whose peer died or hung; INVALID_ARGUMENT from configs.
int ExitCodeFor(const absl::Status& status);

// Logs `message` as an error, flushes every log sink and _exits with `code`:
// the way out of a process that cannot end normally (a hung thread), instead
// of abort(), which would lose the buffered log lines that say why.
[[noreturn]] void FlushLogsAndExit(int code, const std::string& message);

}  // namespace kp::worker::fault

#endif  // KP_RUNTIME_WORKER_FAULT_EXIT_CODES_H_
