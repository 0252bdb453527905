// Follows a worker's metrics JSON-lines file ({"step":..,"loss":..,
// "tokens_per_s":..} one object per line) as it grows, keeping the newest
// values. A partial last line waits for its newline; malformed lines are
// counted and skipped, never fatal: the worker's progress is advisory.
#ifndef KP_RUNTIME_AGENT_METRICS_TAIL_H_
#define KP_RUNTIME_AGENT_METRICS_TAIL_H_

#include <cstdint>
#include <string>

namespace kp::agent {

struct WorkerProgress {
  int64_t step = 0;
  double loss = 0;
  double tokens_per_s = 0;
  int64_t lines = 0;
  int64_t malformed_lines = 0;
};

class MetricsTail {
 public:
  explicit MetricsTail(std::string path) : path_(std::move(path)) {}
  // Reads what was appended since the last call (at most 1 MiB per call).
  // Returns true when a new well-formed line arrived.
  bool Poll();
  const WorkerProgress& progress() const { return progress_; }

 private:
  void ParseLine(const std::string& line);

  std::string path_;
  int64_t offset_ = 0;
  std::string partial_;
  WorkerProgress progress_;
};

}  // namespace kp::agent

#endif  // KP_RUNTIME_AGENT_METRICS_TAIL_H_
