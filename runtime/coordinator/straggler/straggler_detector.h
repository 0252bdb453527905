// Stragglers: a rank whose step time stays above `factor` x the median of
// the job's ranks over a whole window of observations. One detector per job
// generation (ranks and devices change with the generation).
//
// Step times come from progress heartbeats: either measured by the worker
// and reported (ObserveMeasured: kp-train's per-rank compute time, forward +
// backward up to the wait for the gradient all-reduce), or derived at the
// coordinator from successive (step, time) reports of one rank
// (ObserveProgress: time between reports divided by the steps they
// advanced). Under synchronous data parallelism every rank advances at the
// slowest rank's pace, so progress-derived times only separate ranks that do
// not wait on each other; the measured compute time names the slow rank
// there. Once a rank reports measured times, its progress-derived ones are
// dropped (the two do not mix in one window).
#ifndef KP_RUNTIME_COORDINATOR_STRAGGLER_STRAGGLER_DETECTOR_H_
#define KP_RUNTIME_COORDINATOR_STRAGGLER_STRAGGLER_DETECTOR_H_

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kp::coordinator::straggler {

struct StragglerOptions {
  // Slower than factor x the median (of the ranks' window medians).
  double factor = 1.5;
  // Observations per rank a verdict needs; the rank's window median decides,
  // so one slow step (a checkpoint, a GC pause) does not flag it.
  int window = 8;
  // Fewer ranks than this: no median worth comparing against.
  int min_ranks = 2;
};

// A change of a rank's verdict.
struct StragglerEvent {
  int rank = 0;
  std::string device;  // "agent#index"
  bool straggler = false;  // true: flagged; false: recovered
  double step_time_s = 0;  // the rank's window median
  double median_s = 0;     // the job's median
  std::string message;
};

class StragglerDetector {
 public:
  explicit StragglerDetector(StragglerOptions options = {});

  void SetDevice(int rank, std::string device);
  // One step time of `rank`, in seconds (> 0; others are ignored).
  void Observe(int rank, double step_time_s);
  // A progress report: `step` reached at `time_micros`. Emits an
  // observation when the step advanced since the rank's previous report
  // (ignored for ranks that report measured times).
  void ObserveProgress(int rank, int64_t step, int64_t time_micros);
  // The rank's own compute time of `step` (one observation per step: a
  // heartbeat repeating the newest step adds nothing).
  void ObserveMeasured(int rank, int64_t step, double compute_s);

  // Re-evaluates every rank; returns the verdicts that changed.
  std::vector<StragglerEvent> Evaluate();

  bool IsStraggler(int rank) const;
  // Devices ("agent#index") of ranks flagged now.
  std::vector<std::string> StragglerDevices() const;
  // Window median of `rank`; nullopt before its first observation.
  std::optional<double> StepTime(int rank) const;

  // Prometheus samples (no HELP/TYPE lines; PrometheusHeader() has them):
  // kp_rank_step_time_seconds and kp_rank_straggler per rank.
  std::string PrometheusSamples(const std::string& job_id) const;
  static std::string PrometheusHeader();

 private:
  struct Rank {
    std::string device;
    std::deque<double> times;
    std::optional<std::pair<int64_t, int64_t>> last_progress;  // step, micros
    std::optional<int64_t> last_measured_step;
    bool straggler = false;
  };
  StragglerOptions options_;
  std::map<int, Rank> ranks_;
};

double Median(std::vector<double> v);

}  // namespace kp::coordinator::straggler

#endif  // KP_RUNTIME_COORDINATOR_STRAGGLER_STRAGGLER_DETECTOR_H_
