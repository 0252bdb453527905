// Per-rank step times, the straggler signal under synchronous data
// parallelism: every rank advances at the slowest rank's pace, so only a
// rank's own compute time (forward + backward up to the wait for the
// gradient all-reduce) names the slow one. Each kp-train rank appends one
// JSON line per step to its step-time file, beside the metrics file its
// agent gives it; the agent's MetricsTail follows both and reports the
// newest values in its heartbeats.
//
//   {"step": 12, "rank": 1, "compute_s": 0.231, "comm_wait_s": 0.002}
//
// This header has no libtorch: the agent (control plane) includes it.
#ifndef KP_RUNTIME_WORKER_STEP_TIME_STEP_TIME_FILE_H_
#define KP_RUNTIME_WORKER_STEP_TIME_STEP_TIME_FILE_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "runtime/common/status.h"

namespace kp::worker::step_time {

// "<dir>/g1.rank1.jsonl" -> "<dir>/g1.rank1.steps.jsonl" (a name without
// ".jsonl" gets ".steps.jsonl" appended). A separate file, so the metrics
// file keeps one line per logged step for the tools that count them.
std::string StepTimePath(const std::string& metrics_jsonl);

struct StepTime {
  int64_t step = 0;
  int rank = 0;
  double compute_s = 0;
  double comm_wait_s = 0;
};

std::string FormatStepTime(const StepTime& t);
// nullopt for anything but a line FormatStepTime wrote.
std::optional<StepTime> ParseStepTime(const std::string& line);

// TEST ONLY: KP_TEST_SLOW_RANK="<rank>:<ms>[,<rank>:<ms>...]" makes those
// ranks sleep that long at the start of every step, so tests can make a
// straggler on demand. Returns the delay for `rank` (0 when not listed);
// INVALID_ARGUMENT names a malformed value. Never set it in production.
inline constexpr char kSlowRankEnv[] = "KP_TEST_SLOW_RANK";
absl::StatusOr<std::chrono::milliseconds> SlowDownFor(const char* env_value, int rank);

}  // namespace kp::worker::step_time

#endif  // KP_RUNTIME_WORKER_STEP_TIME_STEP_TIME_FILE_H_
