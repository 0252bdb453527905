// The coordinator's recovery state for all its jobs, behind a narrow
// interface so the coordinator's changes stay small: a JobRecovery per job
// that faulted (restart budget, replacement deadline, shrink, excluded
// devices) and a StragglerDetector per running generation. Not thread-safe:
// the coordinator calls it under its own mutex. Time comes from the caller.
//
// The coordinator persists what this state records as job events: every
// history line (a fault, an excluded device) as an EVENT_TYPE_FAULT event
// and every straggler verdict as an EVENT_TYPE_STRAGGLER event. After a
// coordinator restart Restore() rebuilds a job's fault history, excluded
// devices and wait from those events, and its restart count comes back from
// JobStatus.restarts.
#ifndef KP_RUNTIME_COORDINATOR_RECOVERY_RECOVERY_SET_H_
#define KP_RUNTIME_COORDINATOR_RECOVERY_RECOVERY_SET_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kp/v1/agent.pb.h"
#include "kp/v1/job.pb.h"
#include "runtime/common/status.h"
#include "runtime/coordinator/recovery/recovery_policy.h"
#include "runtime/coordinator/straggler/straggler_detector.h"

namespace kp::coordinator::recovery {

// Deprecated: the JobSpec label read as the elastic floor when the spec's
// min_dp field is 0 (unset). The field wins when both are given.
inline constexpr char kMinDpLabel[] = "kp.min_dp";
// The message prefix of the FAULT event recorded when a rank of an
// in_process_shrink job left and its survivors re-formed in-process (no
// restart): Restore skips these (neither a failed generation nor an
// excluded device).
inline constexpr char kInProcessShrinkPrefix[] = "in-process shrink: ";

struct RecoveryConfig {
  RecoveryOptions policy;
  straggler::StragglerOptions straggler;
  // Flagged stragglers' devices are not used by the job's next generation.
  bool exclude_stragglers = false;
};

// The job's shape as the policy sees it (min_dp from spec.min_dp, else the
// deprecated kMinDpLabel, else dp: no shrink unless asked; batch shape from
// config_yaml when inline).
JobShape ShapeOf(const v1::JobSpec& spec);

// The spec of the next generation: unchanged at full size; with dp and the
// config's parallel.dp / micro_batch / grad_accum rewritten after a shrink.
absl::StatusOr<v1::JobSpec> SpecFor(const v1::JobSpec& spec, const Decision& decision);

class RecoverySet {
 public:
  explicit RecoverySet(RecoveryConfig config) : config_(std::move(config)) {}

  // A fault of `job` (its current generation). kFail: end the job with
  // decision.reason. kWait: end the generation and requeue; Place() decides.
  // kIgnore: an old generation's late report.
  Decision OnFault(const v1::JobStatus& job, const Failure& failure, int64_t now_micros);

  // True while `job_id` waits for its next generation after a fault.
  bool Waiting(const std::string& job_id) const;
  // When the job's wait began (its fault), if it waits.
  std::optional<int64_t> WaitingSince(const std::string& job_id) const;
  // For a waiting job: where its next generation goes (kRestart), or keep
  // waiting (kWait), or give up at the replacement deadline (kFail).
  Decision Place(const v1::JobStatus& job, const std::vector<FreeDevices>& free, int64_t now_micros);

  // A new generation started on these devices (rank -> "agent#index").
  void OnPlaced(const v1::JobStatus& job, const std::map<int, std::string>& devices);
  // A progress report of a rank of the job's current generation; returns
  // straggler verdict changes (log and persist them as job events).
  std::vector<straggler::StragglerEvent> OnProgress(const v1::JobStatus& job, int rank, int64_t step,
                                                    int64_t now_micros);
  // A heartbeat's report of a rank of the job's current generation: the
  // rank's measured compute time when it carries one (kp-train reports it
  // on every rank), else its progress. Returns straggler verdict changes.
  std::vector<straggler::StragglerEvent> OnReport(const v1::JobStatus& job, const v1::WorkerReport& report,
                                                  int64_t now_micros);

  // The job's fault history (faults, excluded devices), oldest first; empty
  // for a job that never faulted.
  std::vector<std::string> History(const std::string& job_id) const;
  // Whether `device` ("agent#index") is excluded from the job's placements.
  bool IsExcluded(const std::string& job_id, const std::string& device) const;

  // After a coordinator restart: rebuilds the job's recovery state from its
  // persisted events (FAULT events: history lines; those with a device are
  // exclusions) and, for a placed job, a fresh straggler detector over its
  // assignments. A QUEUED job whose newest fault ended its current
  // generation waits again, from that fault's time.
  void Restore(const v1::JobStatus& job, const std::vector<v1::JobEvent>& events,
               const std::vector<v1::Assignment>& assignments);

  // The job ended: drop its state.
  void Forget(const std::string& job_id);

  // Prometheus text (HELP/TYPE + samples) for the straggler metrics and
  // kp_job_restarts_waiting (jobs waiting for a replacement).
  std::string PrometheusText() const;

 private:
  JobRecovery& RecoveryOf(const v1::JobStatus& job);

  RecoveryConfig config_;
  std::map<std::string, std::unique_ptr<JobRecovery>> jobs_;
  struct Generation {
    int64_t generation = 0;
    std::unique_ptr<straggler::StragglerDetector> detector;
  };
  std::map<std::string, Generation> generations_;
};

}  // namespace kp::coordinator::recovery

#endif  // KP_RUNTIME_COORDINATOR_RECOVERY_RECOVERY_SET_H_
