// What the coordinator does after a fault, as a pure policy: no gRPC, no
// store, time from the caller (tests use a fake clock). One JobRecovery per
// job that runs; the coordinator feeds it failures and asks it where the next
// generation goes.
//
// A fault ends the job's generation g everywhere (the coordinator stops
// listing g's assignments; agents SIGTERM those workers). Then:
//   1. a permanent fault (an exit code that a restart cannot fix, such as
//      kp-train's 2 = bad config) or an exhausted restart budget -> FAIL,
//      with the history of every fault so far in the reason;
//   2. otherwise generation g+1 is placed, with --resume (the newest
//      complete checkpoint; its data position makes the sample stream exact):
//      a. at full size (dp x cp) when enough devices are free;
//      b. else, for an elastic job, at the largest dp' >= min_dp that the
//         free devices hold and that keeps the global batch fixed (per-rank
//         samples grow; grad_accum rises, micro_batch falls only if it must;
//         see ShrinkBatch), cp groups kept whole;
//      c. else WAIT for a replacement agent until the replacement deadline,
//         then FAIL naming how many devices were needed and free.
// Excluded devices (stragglers, when configured) are never used again by
// this job.
#ifndef KP_RUNTIME_COORDINATOR_RECOVERY_RECOVERY_POLICY_H_
#define KP_RUNTIME_COORDINATOR_RECOVERY_RECOVERY_POLICY_H_

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "runtime/coordinator/scheduler.h"

namespace kp::coordinator::recovery {

// Exit codes with a meaning of their own (kp-train and its watchdog).
inline constexpr int kExitBadConfig = 2;        // flags or config rejected: permanent
inline constexpr int kExitCollectiveHung = 75;  // watchdog aborted a hung collective (EX_TEMPFAIL)
inline constexpr int kExitPreempted = 0;        // SIGTERM: checkpointed and left cleanly

struct RecoveryOptions {
  // Used when the job spec says max_restarts = 0. 0 here too = never restart.
  int default_max_restarts = 0;
  // How long a job that cannot be placed after a fault waits for devices.
  int64_t replacement_deadline_micros = 120'000'000;
  // Exit codes a restart cannot fix: fail at once.
  std::set<int> permanent_exit_codes = {kExitBadConfig};
  // No restart placement until this long after the fault: a peer's crash is
  // often reported (by the survivors' broken collectives) before its node is
  // known to be gone, and placing at once would put the next generation on a
  // dead node and spend a second restart. The coordinator also offers only
  // devices of agents heard from since the fault. Negative: the caller's
  // default (the coordinator uses two heartbeat intervals).
  int64_t settle_micros = -1;
};

// The parts of a job the policy needs.
struct JobShape {
  int dp = 1;
  int cp = 1;
  bool elastic = false;
  int min_dp = 1;           // elastic jobs never shrink below this
  int max_restarts = 0;     // 0 = RecoveryOptions::default_max_restarts
  int64_t micro_batch = 0;  // per rank; 0 = unknown (then no shrink)
  int64_t grad_accum = 1;
};

enum class FailureKind {
  kWorkerExit,         // a worker exited != 0 (or was killed: 128 + signal)
  kWorkerStartFailed,  // the agent could not start it
  kAgentLost,          // no heartbeat for the coordinator's timeout
  kCollectiveTimeout,  // a worker's watchdog aborted a hung collective
};

struct Failure {
  FailureKind kind = FailureKind::kWorkerExit;
  int64_t generation = 0;
  std::string agent_id;
  int rank = -1;
  int exit_code = 0;
  int64_t time_micros = 0;
  std::string message;  // optional detail
};

// "generation 2: rank 1 on node-a exited with code 137 (SIGKILL)".
std::string DescribeFailure(const Failure& f);

// A global batch kept fixed across a change of dp: per-rank samples per
// step = micro_batch * grad_accum.
struct BatchShape {
  int64_t micro_batch = 0;
  int64_t grad_accum = 1;
};
// The batch shape for `new_dp` ranks that keeps global = micro_batch *
// grad_accum * old_dp; nullopt when global is not a multiple of new_dp.
// Keeps micro_batch (memory) when it can, else the largest divisor below it.
std::optional<BatchShape> ShrinkBatch(const BatchShape& old, int old_dp, int new_dp);

// kIgnore: a fault of a generation that already ended (its other ranks
// fail too, or report late): history only.
enum class Action { kRestart, kWait, kFail, kIgnore };

struct Decision {
  Action action = Action::kWait;
  // kRestart: where ranks go (index = rank, dp-major), the layout and batch.
  int dp = 0;
  int cp = 0;
  BatchShape batch;
  std::vector<Slot> slots;
  // kWait: when waiting turns into failure.
  int64_t wait_until_micros = 0;
  // Human-readable: why this decision (kFail: the whole history).
  std::string reason;
};

class JobRecovery {
 public:
  JobRecovery(JobShape shape, RecoveryOptions options, int restarts_so_far = 0);

  // Records a fault of `f.generation`. Faults of a generation already
  // recorded are history only (kIgnore). Otherwise returns kFail (permanent
  // fault or no restarts left) or kWait (the next Place() call decides where
  // g+1 goes).
  Decision OnFailure(const Failure& f, int64_t now_micros);

  // Where the next generation goes, given the free devices of one kind
  // (excluded ones are filtered out here). kRestart counts a restart.
  Decision Place(int64_t now_micros, const std::vector<FreeDevices>& free);

  // Never place this job on the device again (straggler, bad hardware).
  void ExcludeDevice(const std::string& agent_id, int device_index, const std::string& why);
  bool IsExcluded(const std::string& agent_id, int device_index) const;

  int restarts() const { return restarts_; }
  int max_restarts() const;
  bool waiting() const { return waiting_since_micros_.has_value(); }
  // When the wait for the next generation began (the fault), if waiting.
  std::optional<int64_t> waiting_since() const { return waiting_since_micros_; }
  const std::vector<std::string>& history() const { return history_; }
  // After a coordinator restart: the state its persisted FAULT events
  // record (history lines, excluded devices, the newest failed generation,
  // and when the wait began if the job still waits for its next generation).
  void Restore(std::vector<std::string> history, const std::set<std::pair<std::string, int>>& excluded,
               int64_t last_failed_generation, std::optional<int64_t> waiting_since_micros);
  // "3 faults: ...; ...; ..." for FAILED messages.
  std::string HistoryText() const;

 private:
  std::vector<FreeDevices> Usable(const std::vector<FreeDevices>& free) const;
  Decision Fail(const std::string& why);

  JobShape shape_;
  RecoveryOptions options_;
  int restarts_ = 0;
  int64_t last_failed_generation_ = -1;
  std::optional<int64_t> waiting_since_micros_;
  std::set<std::pair<std::string, int>> excluded_;
  std::vector<std::string> history_;
};

}  // namespace kp::coordinator::recovery

#endif  // KP_RUNTIME_COORDINATOR_RECOVERY_RECOVERY_POLICY_H_
