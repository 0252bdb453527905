// Follows a worker's metrics JSON-lines file ({"step":..,"loss":..,
// "tokens_per_s":..} one object per line) as it grows, keeping the newest
// values, and beside it the worker's step-time file
// (runtime/worker/step_time/step_time_file.h: this rank's own compute time
// per step, the straggler signal). A partial last line waits for its
// newline; malformed lines are counted and skipped, never fatal: the
// worker's progress is advisory.
#ifndef KP_RUNTIME_AGENT_METRICS_TAIL_H_
#define KP_RUNTIME_AGENT_METRICS_TAIL_H_

#include <cstdint>
#include <functional>
#include <string>

namespace kp::agent {

struct WorkerProgress {
  int64_t step = 0;
  double loss = 0;
  double tokens_per_s = 0;
  int64_t lines = 0;
  int64_t malformed_lines = 0;
  // From the step-time file: the newest step timed (-1: none yet), its
  // compute time and its wait for the gradient all-reduce.
  int64_t timed_step = -1;
  double compute_s = 0;
  double comm_wait_s = 0;
};

class MetricsTail {
 public:
  explicit MetricsTail(std::string path);
  // Reads what was appended to either file since the last call (at most
  // 1 MiB per file per call). Returns true when a new well-formed line
  // arrived.
  bool Poll();
  const WorkerProgress& progress() const { return progress_; }

 private:
  // One growing file read by offset; starts over when the file shrinks.
  struct Follower {
    std::string path;
    int64_t offset = 0;
    std::string partial;
    // Calls `line` for each complete line; returns false on a runaway line.
    bool Read(const std::function<void(const std::string&)>& line);
  };
  void ParseLine(const std::string& line);
  void ParseStepTimeLine(const std::string& line);

  Follower metrics_;
  Follower step_times_;
  WorkerProgress progress_;
};

}  // namespace kp::agent

#endif  // KP_RUNTIME_AGENT_METRICS_TAIL_H_
