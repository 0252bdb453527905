// The coordinator's brain, without gRPC: the job state machine, the queue,
// placement, agent liveness and event fan-out. The gRPC services
// (service.h) are thin adapters over it, and tests drive it directly with a
// FakeClock and an in-memory store.
//
// Job life: SUBMITTED -> QUEUED -> PLACED (generation g, assignments written)
// -> RUNNING (every rank's worker started) -> COMPLETED (every rank exited 0)
// | FAILED | CANCELLED. A fault (worker exit != 0, agent lost) fails the job,
// or for elastic jobs with restarts left sends it back to QUEUED; its next
// placement is generation g+1. Every transition is committed to the
// StateStore before memory changes and before any agent hears of it.
//
// One mutex guards everything: each call is short (no I/O but the store's
// commit), which keeps the code obviously race-free; the heartbeat load test
// (bench) shows whether that ever needs to change.
#ifndef KP_RUNTIME_COORDINATOR_COORDINATOR_H_
#define KP_RUNTIME_COORDINATOR_COORDINATOR_H_

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "kp/v1/agent.pb.h"
#include "kp/v1/job.pb.h"
#include "runtime/common/clock.h"
#include "runtime/common/status.h"
#include "runtime/coordinator/kv_store.h"
#include "runtime/coordinator/recovery/recovery_set.h"
#include "runtime/coordinator/scheduler.h"
#include "runtime/coordinator/spec_validation.h"
#include "runtime/coordinator/state_store.h"

namespace kp::coordinator {

struct CoordinatorOptions {
  SpecRoots roots;
  int64_t heartbeat_interval_ms = 1000;
  // An agent silent for longer is LOST and its jobs fault.
  int64_t heartbeat_timeout_micros = 10'000'000;
  // Where workers reach the Rendezvous service (host:port).
  std::string advertised_address;
  // After a fault: restarts, replacement deadline, elastic shrink,
  // stragglers (runtime/coordinator/recovery/recovery_set.h).
  recovery::RecoveryConfig recovery;
};

struct WatchBatch {
  std::vector<v1::JobEvent> events;  // ordered by sequence
  bool finished = false;             // the job ended and every event was returned
};

bool IsTerminal(v1::JobState state);

class Coordinator {
 public:
  // Loads every job, agent and assignment from `store` and resumes: agents get
  // a fresh heartbeat deadline, SUBMITTED jobs are queued, placed jobs keep
  // their assignments. `store` and `clock` must outlive the coordinator.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(StateStore* store, Clock* clock,
                                                             CoordinatorOptions options);

  absl::StatusOr<v1::JobStatus> SubmitJob(const v1::JobSpec& spec);
  absl::StatusOr<v1::JobStatus> GetJob(const std::string& job_id);
  std::vector<v1::JobStatus> ListJobs(const std::vector<v1::JobState>& states);
  absl::StatusOr<v1::JobStatus> CancelJob(const std::string& job_id, const std::string& reason);
  // Blocks up to `max_wait` (real time) for events after `after_sequence`.
  absl::StatusOr<WatchBatch> WaitForEvents(const std::string& job_id, int64_t after_sequence,
                                           std::chrono::milliseconds max_wait);

  absl::StatusOr<v1::RegisterAgentResponse> RegisterAgent(const v1::AgentInfo& info);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request);
  std::vector<v1::AgentStatus> ListAgents();

  // Marks silent agents lost and places queued jobs. The server calls it
  // periodically; tests call it after FakeClock::Advance.
  void Tick();

  // Prometheus text exposition: jobs by state, agents by state, per-job
  // step / loss / tokens per second of placed and running jobs.
  std::string PrometheusText();

  KvStore& kv() { return kv_; }
  void SetAdvertisedAddress(const std::string& address);
  // Wakes every watcher; they return finished batches.
  void Shutdown();

 private:
  struct JobEntry {
    v1::JobStatus status;
    std::vector<v1::Assignment> assignments;
    std::vector<v1::JobEvent> events;  // persisted ones
    std::optional<v1::JobEvent> latest_progress;  // not persisted
    int64_t next_sequence = 1;
    // Runtime of the current generation, rebuilt from heartbeats.
    std::set<int> started;
    std::set<int> done;
    std::map<int, v1::WorkerReport> reports;
  };
  // JobSpec.in_process_shrink: rank r.rank() exited non-zero while enough
  // survivors remain; records the departure (WORKER + FAULT events, the rank's
  // assignment dropped) and returns true: the generation goes on. False: the
  // normal recovery applies.
  bool DepartInProcess(JobEntry& entry, const v1::WorkerReport& r, const std::string& agent_id);
  struct AgentEntry {
    v1::AgentStatus status;
    int64_t last_seen_micros = 0;
  };

  Coordinator(StateStore* store, Clock* clock, CoordinatorOptions options);
  absl::Status Load();

  // Writes `next` (+ assignments, + events) to the store, then to memory.
  absl::Status Commit(JobEntry& entry, const v1::JobStatus& next, const std::vector<v1::Assignment>* assignments,
                      std::vector<v1::JobEvent> events);
  v1::JobEvent StateEvent(const v1::JobStatus& next, const std::string& message);
  v1::JobEvent StragglerJobEvent(const v1::JobStatus& job, const straggler::StragglerEvent& ev);
  // FAULT events for history[from..]: faults and excluded devices.
  std::vector<v1::JobEvent> FaultEvents(const v1::JobStatus& job, const std::vector<std::string>& history,
                                        size_t from);
  absl::Status Transition(JobEntry& entry, v1::JobState state, const std::string& message,
                          const std::vector<v1::Assignment>* assignments, std::vector<v1::JobEvent> extra = {});
  void Fault(JobEntry& entry, const std::string& message, const recovery::Failure& failure);
  void EndGeneration(JobEntry& entry);
  void Schedule();
  // `slots` (a restart placement chosen by the recovery policy) replaces
  // the scheduler's choice when given.
  std::optional<std::vector<v1::Assignment>> TryPlace(const JobEntry& entry, const std::set<std::string>& used,
                                                      const std::vector<Slot>* slots = nullptr);
  // Free devices for a restart, of agents heard from since `since_micros`.
  std::vector<FreeDevices> FreeForRestart(const v1::JobSpec& spec, const std::set<std::string>& used,
                                          int64_t since_micros);
  void UpdateProgress(JobEntry& entry);
  std::string RendezvousPrefix(const v1::JobStatus& job) const;

  StateStore* store_;
  Clock* clock_;
  CoordinatorOptions options_;
  KvStore kv_;
  recovery::RecoverySet recovery_;

  std::mutex mu_;
  std::condition_variable events_cv_;
  std::map<std::string, JobEntry> jobs_;
  std::map<std::string, AgentEntry> agents_;
  int64_t next_job_sequence_ = 1;
  bool shutdown_ = false;
};

}  // namespace kp::coordinator

#endif  // KP_RUNTIME_COORDINATOR_COORDINATOR_H_
