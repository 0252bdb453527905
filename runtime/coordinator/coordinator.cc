#include "runtime/coordinator/coordinator.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "runtime/coordinator/fp8_devices.h"
#include "runtime/coordinator/scheduler.h"
#include "runtime/snapshot/resume_plan.h"

namespace kp::coordinator {
namespace {

// After a restart, sequences continue this far past the last persisted one:
// progress events are not persisted, and a watcher that saw some must still
// get every later persisted event.
constexpr int64_t kSequenceGapAfterRestart = 1 << 20;

// Restart placements wait two heartbeat intervals unless told otherwise:
// long enough for every live agent to be heard from after the fault.
recovery::RecoveryConfig RecoveryDefaults(const CoordinatorOptions& o) {
  recovery::RecoveryConfig c = o.recovery;
  if (c.policy.settle_micros < 0) c.policy.settle_micros = 2 * o.heartbeat_interval_ms * 1000;
  return c;
}

bool IsActive(v1::JobState s) { return s == v1::JOB_STATE_PLACED || s == v1::JOB_STATE_RUNNING; }

std::string DeviceKey(const std::string& agent_id, int index) { return agent_id + "#" + std::to_string(index); }

std::string LowerStateName(v1::JobState s) {
  std::string name = v1::JobState_Name(s);
  name = name.substr(std::string("JOB_STATE_").size());
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  return name;
}

std::string EscapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

bool IsTerminal(v1::JobState s) {
  return s == v1::JOB_STATE_COMPLETED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

Coordinator::Coordinator(StateStore* store, Clock* clock, CoordinatorOptions options)
    : store_(store), clock_(clock), options_(std::move(options)), recovery_(RecoveryDefaults(options_)) {}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(StateStore* store, Clock* clock,
                                                                 CoordinatorOptions options) {
  std::unique_ptr<Coordinator> c(new Coordinator(store, clock, std::move(options)));
  KP_RETURN_IF_ERROR(c->Load());
  return c;
}

absl::Status Coordinator::Load() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowMicros();
  KP_ASSIGN_OR_RETURN(auto agents, store_->LoadAgents());
  for (auto& a : agents) {
    // A fresh deadline: the agents kept running while we were down.
    agents_[a.info().agent_id()] = AgentEntry{a, now};
  }
  KP_ASSIGN_OR_RETURN(auto jobs, store_->LoadJobs());
  for (auto& j : jobs) {
    next_job_sequence_ = std::max(next_job_sequence_, j.sequence() + 1);
    jobs_[j.job_id()].status = std::move(j);
  }
  KP_ASSIGN_OR_RETURN(auto assignments, store_->LoadAssignments());
  for (auto& a : assignments) {
    auto it = jobs_.find(a.job_id());
    if (it != jobs_.end()) it->second.assignments.push_back(std::move(a));
  }
  KP_ASSIGN_OR_RETURN(auto events, store_->LoadEvents());
  for (auto& e : events) {
    auto it = jobs_.find(e.job_id());
    if (it == jobs_.end()) continue;
    it->second.next_sequence = std::max(it->second.next_sequence, e.sequence() + 1);
    it->second.events.push_back(std::move(e));
  }
  for (auto& [id, entry] : jobs_) {
    if (!entry.events.empty()) entry.next_sequence += kSequenceGapAfterRestart;
    // Fault history, excluded devices, a pending wait and the straggler
    // detector of a running generation, from the persisted events.
    recovery_.Restore(entry.status, entry.events, entry.assignments);
    v1::JobState s = entry.status.state();
    if (s == v1::JOB_STATE_SUBMITTED) {
      KP_RETURN_IF_ERROR(Transition(entry, v1::JOB_STATE_QUEUED, "queued after coordinator restart", nullptr));
    } else if (IsActive(s) && entry.assignments.empty()) {
      std::vector<v1::Assignment> none;
      KP_RETURN_IF_ERROR(Transition(entry, v1::JOB_STATE_QUEUED, "requeued: placement lost", &none));
    }
  }
  spdlog::info("coordinator state loaded: {} jobs, {} agents", jobs_.size(), agents_.size());
  Schedule();
  return absl::OkStatus();
}

void Coordinator::SetAdvertisedAddress(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  options_.advertised_address = address;
}

v1::JobEvent Coordinator::StateEvent(const v1::JobStatus& next, const std::string& message) {
  v1::JobEvent e;
  e.set_job_id(next.job_id());
  e.set_type(v1::EVENT_TYPE_STATE);
  e.set_state(next.state());
  e.set_generation(next.generation());
  *e.mutable_progress() = next.progress();
  e.set_message(message);
  e.set_time_micros(clock_->NowMicros());
  return e;
}

v1::JobEvent Coordinator::StragglerJobEvent(const v1::JobStatus& job, const straggler::StragglerEvent& ev) {
  v1::JobEvent e;
  e.set_job_id(job.job_id());
  e.set_type(v1::EVENT_TYPE_STRAGGLER);
  e.set_state(job.state());
  e.set_generation(job.generation());
  e.set_rank(ev.rank);
  e.set_device(ev.device);
  e.set_straggler(ev.straggler);
  e.set_step_time_s(ev.step_time_s);
  e.set_median_step_time_s(ev.median_s);
  e.set_message(ev.message);
  e.set_time_micros(clock_->NowMicros());
  return e;
}

std::vector<v1::JobEvent> Coordinator::FaultEvents(const v1::JobStatus& job, const std::vector<std::string>& history,
                                                   size_t from) {
  std::vector<v1::JobEvent> out;
  for (size_t i = from; i < history.size(); ++i) {
    v1::JobEvent e;
    e.set_job_id(job.job_id());
    e.set_type(v1::EVENT_TYPE_FAULT);
    e.set_state(job.state());
    e.set_generation(job.generation());
    e.set_message(history[i]);
    // "excluded <agent#index>: why": the device a restart must avoid.
    constexpr char kExcluded[] = "excluded ";
    if (history[i].rfind(kExcluded, 0) == 0) {
      const size_t start = sizeof(kExcluded) - 1;
      e.set_device(history[i].substr(start, history[i].find(": ", start) - start));
    }
    e.set_time_micros(clock_->NowMicros());
    out.push_back(std::move(e));
  }
  return out;
}

absl::Status Coordinator::Commit(JobEntry& entry, const v1::JobStatus& next,
                                 const std::vector<v1::Assignment>* assignments, std::vector<v1::JobEvent> events) {
  int64_t seq = entry.next_sequence;
  for (auto& e : events) e.set_sequence(seq++);
  KP_RETURN_IF_ERROR(store_->CommitJob(next, assignments, events));
  entry.next_sequence = seq;
  entry.status = next;
  if (assignments != nullptr) entry.assignments = *assignments;
  for (auto& e : events) entry.events.push_back(std::move(e));
  events_cv_.notify_all();
  return absl::OkStatus();
}

absl::Status Coordinator::Transition(JobEntry& entry, v1::JobState state, const std::string& message,
                                     const std::vector<v1::Assignment>* assignments,
                                     std::vector<v1::JobEvent> extra) {
  v1::JobStatus next = entry.status;
  next.set_state(state);
  if (!message.empty()) next.set_message(message);
  if (IsTerminal(state)) {
    next.set_finished_micros(clock_->NowMicros());
    recovery_.Forget(next.job_id());
  }
  extra.push_back(StateEvent(next, message));
  spdlog::info("job {} -> {} (generation {}){}{}", next.job_id(), v1::JobState_Name(state), next.generation(),
               message.empty() ? "" : ": ", message);
  return Commit(entry, next, assignments, std::move(extra));
}

std::string Coordinator::RendezvousPrefix(const v1::JobStatus& job) const {
  return "jobs/" + job.job_id() + "/g" + std::to_string(job.generation()) + "/";
}

void Coordinator::EndGeneration(JobEntry& entry) {
  kv_.ErasePrefix(RendezvousPrefix(entry.status));
  entry.started.clear();
  entry.done.clear();
  entry.reports.clear();
}

absl::StatusOr<v1::JobStatus> Coordinator::SubmitJob(const v1::JobSpec& spec) {
  KP_RETURN_IF_ERROR(ValidateJobSpec(spec, options_.roots));
  const bool fp8_fallback =
      spec.precision() == v1::PRECISION_FP8 && Fp8FallbackAllowed(spec, options_.roots);
  std::lock_guard<std::mutex> lock(mu_);
  if (shutdown_) return absl::UnavailableError("coordinator shutting down");
  {
    // FP8 on a cluster with no device able to run it fails here, naming the
    // devices, rather than in every worker after placement.
    std::vector<v1::AgentStatus> agents;
    for (const auto& [id, a] : agents_) agents.push_back(a.status);
    KP_RETURN_IF_ERROR(CheckFp8Devices(spec, fp8_fallback, agents));
  }
  const int64_t seq = next_job_sequence_++;
  char id[32];
  std::snprintf(id, sizeof(id), "j%06lld", static_cast<long long>(seq));
  v1::JobStatus job;
  job.set_job_id(id);
  *job.mutable_spec() = spec;
  job.set_state(v1::JOB_STATE_SUBMITTED);
  job.set_sequence(seq);
  job.set_submitted_micros(clock_->NowMicros());
  job.mutable_progress()->set_total_steps(spec.steps());
  JobEntry& entry = jobs_[id];
  absl::Status st = Commit(entry, job, nullptr, {StateEvent(job, "submitted")});
  if (!st.ok()) {
    jobs_.erase(id);
    return st;
  }
  spdlog::info("job {} submitted: {} dp={} cp={} steps={} priority={}", id, spec.name(), spec.dp(), spec.cp(),
               spec.steps(), spec.priority());
  KP_RETURN_IF_ERROR(Transition(entry, v1::JOB_STATE_QUEUED, "", nullptr));
  Schedule();
  return entry.status;
}

absl::StatusOr<v1::JobStatus> Coordinator::GetJob(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError("no job " + job_id);
  return it->second.status;
}

std::vector<v1::JobStatus> Coordinator::ListJobs(const std::vector<v1::JobState>& states) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::JobStatus> out;
  for (const auto& [id, e] : jobs_) {
    if (states.empty() || std::find(states.begin(), states.end(), e.status.state()) != states.end()) {
      out.push_back(e.status);
    }
  }
  return out;
}

absl::StatusOr<v1::JobStatus> Coordinator::CancelJob(const std::string& job_id, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError("no job " + job_id);
  JobEntry& entry = it->second;
  if (IsTerminal(entry.status.state())) {
    return absl::FailedPreconditionError("job " + job_id + " already " + v1::JobState_Name(entry.status.state()));
  }
  std::vector<v1::Assignment> none;
  KP_RETURN_IF_ERROR(
      Transition(entry, v1::JOB_STATE_CANCELLED, reason.empty() ? "cancelled" : "cancelled: " + reason, &none));
  EndGeneration(entry);
  Schedule();
  return entry.status;
}

absl::StatusOr<WatchBatch> Coordinator::WaitForEvents(const std::string& job_id, int64_t after_sequence,
                                                      std::chrono::milliseconds max_wait) {
  std::unique_lock<std::mutex> lock(mu_);
  const auto deadline = std::chrono::steady_clock::now() + max_wait;
  while (true) {
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return absl::NotFoundError("no job " + job_id);
    const JobEntry& entry = it->second;
    WatchBatch batch;
    for (const auto& e : entry.events) {
      if (e.sequence() > after_sequence) batch.events.push_back(e);
    }
    if (entry.latest_progress && entry.latest_progress->sequence() > after_sequence) {
      batch.events.push_back(*entry.latest_progress);
    }
    std::sort(batch.events.begin(), batch.events.end(),
              [](const auto& a, const auto& b) { return a.sequence() < b.sequence(); });
    batch.finished = IsTerminal(entry.status.state()) || shutdown_;
    if (!batch.events.empty() || batch.finished) return batch;
    if (events_cv_.wait_until(lock, deadline) == std::cv_status::timeout) return batch;
  }
}

absl::StatusOr<v1::RegisterAgentResponse> Coordinator::RegisterAgent(const v1::AgentInfo& info) {
  if (info.agent_id().empty() || info.agent_id().size() > 128) {
    return absl::InvalidArgumentError("info.agent_id: must be 1 to 128 bytes");
  }
  if (info.devices_size() > 1024) return absl::InvalidArgumentError("info.devices: at most 1024");
  std::set<int> seen;
  for (const auto& d : info.devices()) {
    if (d.kind() != v1::DEVICE_KIND_CUDA && d.kind() != v1::DEVICE_KIND_CPU) {
      return absl::InvalidArgumentError("info.devices[" + std::to_string(d.index()) + "].kind: must be CUDA or CPU");
    }
    if (d.index() < 0 || !seen.insert(d.index()).second) {
      return absl::InvalidArgumentError("info.devices: index " + std::to_string(d.index()) +
                                        " negative or repeated");
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  AgentEntry& a = agents_[info.agent_id()];
  a.status.set_state(v1::AGENT_STATE_ALIVE);
  *a.status.mutable_info() = info;
  a.status.clear_snapshots();  // a (re)started agent holds none until it says so
  a.last_seen_micros = clock_->NowMicros();
  a.status.set_last_heartbeat_micros(a.last_seen_micros);
  KP_RETURN_IF_ERROR(store_->SaveAgent(a.status));
  spdlog::info("agent {} registered with {} devices", info.agent_id(), info.devices_size());
  Schedule();
  v1::RegisterAgentResponse resp;
  resp.set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
  return resp;
}

void Coordinator::UpdateProgress(JobEntry& entry) {
  v1::Progress p = entry.status.progress();
  // Rank 0 speaks for the job: kp-train writes metrics on rank 0 only, and
  // its tokens_per_s already counts every data-parallel rank.
  auto r0 = entry.reports.find(0);
  if (r0 == entry.reports.end()) return;
  const int64_t step = r0->second.step();
  const double loss = r0->second.loss();
  const double tokens = r0->second.tokens_per_s();
  if (step == p.step() && loss == p.loss() && tokens == p.tokens_per_s()) return;
  p.set_step(step);
  p.set_loss(loss);
  p.set_tokens_per_s(tokens);
  p.set_updated_micros(clock_->NowMicros());
  *entry.status.mutable_progress() = p;
  v1::JobEvent e;
  e.set_job_id(entry.status.job_id());
  e.set_sequence(entry.next_sequence++);
  e.set_type(v1::EVENT_TYPE_PROGRESS);
  e.set_state(entry.status.state());
  e.set_generation(entry.status.generation());
  *e.mutable_progress() = p;
  e.set_time_micros(p.updated_micros());
  entry.latest_progress = std::move(e);
  events_cv_.notify_all();
}

absl::StatusOr<v1::HeartbeatResponse> Coordinator::Heartbeat(const v1::HeartbeatRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  auto ait = agents_.find(request.agent_id());
  if (ait == agents_.end()) return absl::NotFoundError("unknown agent " + request.agent_id() + ": register first");
  AgentEntry& agent = ait->second;
  agent.last_seen_micros = clock_->NowMicros();
  agent.status.set_last_heartbeat_micros(agent.last_seen_micros);
  bool reschedule = false;
  if (agent.status.state() != v1::AGENT_STATE_ALIVE) {
    agent.status.set_state(v1::AGENT_STATE_ALIVE);
    KP_RETURN_IF_ERROR(store_->SaveAgent(agent.status));
    spdlog::info("agent {} is back", request.agent_id());
    reschedule = true;
  }
  // In-memory snapshots it holds (runtime/snapshot/): read when a job
  // restarts (TryPlace). Not persisted: the next heartbeat says it again.
  *agent.status.mutable_snapshots() = request.snapshots();

  // Pass 1: which reports count (current generation, assigned to this
  // agent), and which jobs now have every worker started: they become
  // RUNNING before any exit of this heartbeat is applied, so the event
  // order is always PLACED, RUNNING, worker exits, COMPLETED/FAILED.
  std::vector<const v1::WorkerReport*> valid;
  std::set<std::string> touched;
  for (const auto& r : request.workers()) {
    auto jit = jobs_.find(r.job_id());
    if (jit == jobs_.end()) continue;
    JobEntry& entry = jit->second;
    // Reports of an older generation, or of a job that ended, only tell us
    // the agent has not stopped those workers yet; the reply does that.
    if (r.generation() != entry.status.generation() || !IsActive(entry.status.state())) continue;
    auto assigned = std::find_if(entry.assignments.begin(), entry.assignments.end(), [&](const v1::Assignment& a) {
      return a.rank() == r.rank() && a.agent_id() == request.agent_id();
    });
    if (assigned == entry.assignments.end()) continue;
    entry.reports[r.rank()] = r;
    entry.started.insert(r.rank());
    // Straggler verdicts (from the ranks' own step times) are job events,
    // persisted: `kprun watch` shows them and they outlive a restart.
    std::vector<v1::JobEvent> verdicts;
    for (const auto& ev : recovery_.OnReport(entry.status, r, clock_->NowMicros())) {
      spdlog::warn("job {}: {}", r.job_id(), ev.message);
      verdicts.push_back(StragglerJobEvent(entry.status, ev));
    }
    if (!verdicts.empty()) {
      absl::Status st = Commit(entry, entry.status, nullptr, std::move(verdicts));
      if (!st.ok()) spdlog::error("persisting a straggler verdict of job {}: {}", r.job_id(), st.ToString());
    }
    touched.insert(r.job_id());
    valid.push_back(&r);
  }
  for (const auto& id : touched) {
    JobEntry& entry = jobs_[id];
    if (entry.status.state() == v1::JOB_STATE_PLACED && entry.started.size() == entry.assignments.size()) {
      absl::Status st = Transition(entry, v1::JOB_STATE_RUNNING, "", nullptr);
      if (!st.ok()) spdlog::error("job {}: {}", id, st.ToString());
    }
  }
  // Pass 2: exits.
  for (const v1::WorkerReport* rp : valid) {
    const v1::WorkerReport& r = *rp;
    JobEntry& entry = jobs_[r.job_id()];
    if (r.generation() != entry.status.generation() || !IsActive(entry.status.state())) continue;  // faulted above
    const bool failed = r.state() == v1::WORKER_STATE_START_FAILED ||
                        (r.state() == v1::WORKER_STATE_EXITED && r.exit_code() != 0);
    if (failed && DepartInProcess(entry, r, request.agent_id())) continue;
    if (failed) {
      std::string why = r.state() == v1::WORKER_STATE_START_FAILED
                            ? "worker rank " + std::to_string(r.rank()) + " failed to start: " + r.message()
                            : "worker rank " + std::to_string(r.rank()) + " exited with code " +
                                  std::to_string(r.exit_code());
      recovery::Failure f;
      f.kind = r.state() == v1::WORKER_STATE_START_FAILED ? recovery::FailureKind::kWorkerStartFailed
                                                           : recovery::FailureKind::kWorkerExit;
      f.agent_id = request.agent_id();
      f.rank = r.rank();
      f.exit_code = r.exit_code();
      Fault(entry, why, f);
      reschedule = true;
      continue;
    }
    if (r.state() == v1::WORKER_STATE_EXITED && entry.done.insert(r.rank()).second) {
      v1::JobEvent e;
      e.set_job_id(r.job_id());
      e.set_type(v1::EVENT_TYPE_WORKER);
      e.set_state(entry.status.state());
      e.set_generation(entry.status.generation());
      e.set_rank(r.rank());
      e.set_exit_code(0);
      e.set_message("worker rank " + std::to_string(r.rank()) + " exited with code 0");
      e.set_time_micros(clock_->NowMicros());
      absl::Status st = Commit(entry, entry.status, nullptr, {e});
      if (!st.ok()) spdlog::error("persisting a worker exit of job {}: {}", r.job_id(), st.ToString());
    }
  }
  for (const auto& id : touched) {
    JobEntry& entry = jobs_[id];
    if (!IsActive(entry.status.state())) continue;
    UpdateProgress(entry);
    // Every worker exited 0 but rank 0 stopped short of the last step: they
    // were stopped (SIGTERM: kp-train checkpoints at a step boundary and
    // exits 0), not done. Restart from that checkpoint.
    // The furthest step any assigned rank reported: rank 0's metrics, or,
    // once rank 0 left an in-process shrink, the ranks' own step times.
    int64_t last_step = 0;
    for (const auto& a : entry.assignments) {
      auto rep = entry.reports.find(a.rank());
      if (rep == entry.reports.end()) continue;
      last_step = std::max({last_step, rep->second.step(), rep->second.timed_step()});
    }
    if (entry.done.size() == entry.assignments.size() && last_step > 0 &&
        last_step + 1 < entry.status.spec().steps()) {
      recovery::Failure f;
      f.kind = recovery::FailureKind::kWorkerExit;
      f.agent_id = request.agent_id();
      f.rank = 0;
      f.exit_code = 0;
      f.message = "stopped after step " + std::to_string(last_step) + " of " +
                  std::to_string(entry.status.spec().steps());
      Fault(entry, "every worker exited 0 before the last step (stopped)", f);
      reschedule = true;
      continue;
    }
    if (entry.done.size() == entry.assignments.size()) {
      std::vector<v1::Assignment> none;
      absl::Status st = Transition(entry, v1::JOB_STATE_COMPLETED, "", &none);
      if (st.ok()) EndGeneration(entry);
      if (!st.ok()) spdlog::error("job {}: {}", id, st.ToString());
      reschedule = true;
    }
  }
  if (reschedule) Schedule();

  v1::HeartbeatResponse resp;
  for (const auto& [id, entry] : jobs_) {
    if (!IsTerminal(entry.status.state())) resp.add_snapshot_jobs(id);  // the agent drops ended jobs' snapshots
    if (!IsActive(entry.status.state())) continue;
    for (const auto& a : entry.assignments) {
      if (a.agent_id() == request.agent_id()) *resp.add_assignments() = a;
    }
  }
  resp.set_snapshot_jobs_listed(true);
  return resp;
}

bool Coordinator::DepartInProcess(JobEntry& entry, const v1::WorkerReport& r, const std::string& agent_id) {
  const v1::JobStatus& cur = entry.status;
  const v1::JobSpec& spec = cur.spec();
  // Only a worker that died mid-run: not one that failed to start (nor any
  // fault before every rank started), not a permanent exit, not a survivor's
  // watchdog abort (75: the group itself is stuck; restart from the checkpoint).
  if (!spec.in_process_shrink() || cur.state() != v1::JOB_STATE_RUNNING) return false;
  if (r.state() != v1::WORKER_STATE_EXITED || r.exit_code() == 0) return false;
  if (r.exit_code() == recovery::kExitCollectiveHung ||
      options_.recovery.policy.permanent_exit_codes.count(r.exit_code())) {
    return false;
  }
  auto it = std::find_if(entry.assignments.begin(), entry.assignments.end(),
                         [&](const v1::Assignment& a) { return a.rank() == r.rank(); });
  if (it == entry.assignments.end()) return false;
  const int survivors = static_cast<int>(entry.assignments.size()) - 1;
  const int min_dp = std::max(1, recovery::ShapeOf(spec).min_dp);
  if (survivors < min_dp) return false;

  const int64_t now = clock_->NowMicros();
  const std::string device = DeviceKey(it->agent_id(), it->device_index());
  std::vector<v1::Assignment> rest;
  std::string ranks;
  for (const auto& a : entry.assignments) {
    if (a.rank() == r.rank()) continue;
    rest.push_back(a);
    ranks += (ranks.empty() ? "" : ", ") + std::to_string(a.rank());
  }
  recovery::Failure f;
  f.kind = recovery::FailureKind::kWorkerExit;
  f.generation = cur.generation();
  f.agent_id = agent_id;
  f.rank = r.rank();
  f.exit_code = r.exit_code();
  const std::string what = recovery::DescribeFailure(f);
  const std::string message = std::string(recovery::kInProcessShrinkPrefix) + "rank " + std::to_string(r.rank()) +
                              " on " + device + " left (" + what + "); its " + std::to_string(survivors) +
                              " survivors (ranks " + ranks + ") re-form in-process without it, dp " +
                              std::to_string(entry.assignments.size()) + " -> " + std::to_string(survivors) +
                              ", generation " + std::to_string(cur.generation()) + " goes on (no restart)";
  v1::JobEvent worker;
  worker.set_job_id(cur.job_id());
  worker.set_type(v1::EVENT_TYPE_WORKER);
  worker.set_state(cur.state());
  worker.set_generation(cur.generation());
  worker.set_rank(r.rank());
  worker.set_exit_code(r.exit_code());
  worker.set_message("worker rank " + std::to_string(r.rank()) + " exited with code " + std::to_string(r.exit_code()));
  worker.set_time_micros(now);
  v1::JobEvent fault = worker;
  fault.set_type(v1::EVENT_TYPE_FAULT);
  fault.clear_exit_code();
  fault.set_device(device);
  fault.set_message(message);
  v1::JobStatus next = cur;
  next.set_exit_code(r.exit_code());
  next.set_failed_rank(r.rank());
  spdlog::warn("job {}: {}", cur.job_id(), message);
  absl::Status st = Commit(entry, next, &rest, {worker, fault});
  if (!st.ok()) spdlog::error("persisting the departure of rank {} of job {}: {}", r.rank(), cur.job_id(), st.ToString());
  entry.reports.erase(r.rank());
  entry.done.erase(r.rank());
  return true;
}

void Coordinator::Fault(JobEntry& entry, const std::string& message, const recovery::Failure& failure) {
  const v1::JobStatus& cur = entry.status;
  const int64_t now = clock_->NowMicros();
  recovery::Failure f = failure;
  f.generation = cur.generation();
  f.time_micros = now;
  // The recovery policy decides: requeue for generation g+1 (placed by
  // Schedule through recovery_.Place) or fail with the history of causes.
  // What it adds to the job's history (this fault, devices it excludes)
  // becomes FAULT events, so a restarted coordinator knows it too.
  const size_t known = recovery_.History(cur.job_id()).size();
  const recovery::Decision decision = recovery_.OnFault(cur, f, now);
  std::vector<v1::JobEvent> events = FaultEvents(cur, recovery_.History(cur.job_id()), known);
  if (decision.action == recovery::Action::kIgnore) {
    if (events.empty()) return;
    absl::Status st = Commit(entry, cur, nullptr, std::move(events));
    if (!st.ok()) spdlog::error("persisting a fault of job {}: {}", cur.job_id(), st.ToString());
    return;
  }
  std::vector<v1::Assignment> none;
  v1::JobEvent worker;
  worker.set_job_id(cur.job_id());
  worker.set_type(v1::EVENT_TYPE_WORKER);
  worker.set_state(cur.state());
  worker.set_generation(cur.generation());
  worker.set_rank(failure.rank);
  worker.set_exit_code(failure.exit_code);
  worker.set_message(message);
  worker.set_time_micros(now);
  v1::JobStatus next = cur;
  next.set_exit_code(failure.exit_code);
  next.set_failed_rank(failure.rank);
  EndGeneration(entry);
  if (decision.action == recovery::Action::kWait) {
    next.set_restarts(cur.restarts() + 1);
    next.set_state(v1::JOB_STATE_QUEUED);
    next.set_message("requeued after: " + message + " (" + decision.reason.substr(0, decision.reason.find(" after ")) +
                     ")");
    spdlog::warn("job {}: {}; {}", cur.job_id(), message, decision.reason);
  } else {
    next.set_state(v1::JOB_STATE_FAILED);
    next.set_message(message + "; " + decision.reason);
    next.set_finished_micros(now);
    recovery_.Forget(cur.job_id());
    spdlog::warn("job {} failed: {}", cur.job_id(), decision.reason);
  }
  events.insert(events.begin(), worker);
  events.push_back(StateEvent(next, next.message()));
  absl::Status st = Commit(entry, next, &none, std::move(events));
  if (!st.ok()) spdlog::error("persisting the fault of job {}: {}", cur.job_id(), st.ToString());
}

std::vector<FreeDevices> Coordinator::FreeForRestart(const v1::JobSpec& spec, const std::set<std::string>& used,
                                                     int64_t since_micros) {
  // The kind TryPlace would pick: GPUs when the cluster has enough of them
  // (or has any and the job may not fall back), else CPU slots.
  std::vector<FreeDevices> cuda, cpu;
  size_t cuda_free = 0, cuda_total = 0;
  for (const auto& [id, a] : agents_) {
    // A dead node's agent may not be declared lost yet: it has not been
    // heard from since the fault.
    if (a.status.state() != v1::AGENT_STATE_ALIVE || a.last_seen_micros < since_micros) continue;
    FreeDevices fc{id, {}}, fp{id, {}};
    for (const auto& d : a.status.info().devices()) {
      if (used.count(DeviceKey(id, d.index()))) {
        cuda_total += d.kind() == v1::DEVICE_KIND_CUDA;
        continue;
      }
      if (d.kind() == v1::DEVICE_KIND_CUDA) {
        ++cuda_total;
        ++cuda_free;
        fc.devices.push_back(d);
      } else if (d.kind() == v1::DEVICE_KIND_CPU) {
        fp.devices.push_back(d);
      }
    }
    if (!fc.devices.empty()) cuda.push_back(std::move(fc));
    if (!fp.devices.empty()) cpu.push_back(std::move(fp));
  }
  const size_t world = static_cast<size_t>(spec.dp()) * spec.cp();
  if (cuda_total == 0 || (spec.cpu_fallback() && cuda_free < world)) return cpu;
  return cuda;
}

std::optional<std::vector<v1::Assignment>> Coordinator::TryPlace(const JobEntry& entry,
                                                                  const std::set<std::string>& used,
                                                                  const std::vector<Slot>* given) {
  const v1::JobSpec& spec = entry.status.spec();
  auto free_of = [&](v1::DeviceKind kind, size_t* total_of_kind) {
    std::vector<FreeDevices> free;
    for (const auto& [id, a] : agents_) {
      if (a.status.state() != v1::AGENT_STATE_ALIVE) continue;
      FreeDevices f{id, {}};
      for (const auto& d : a.status.info().devices()) {
        if (d.kind() != kind) continue;
        ++*total_of_kind;
        if (!used.count(DeviceKey(id, d.index()))) f.devices.push_back(d);
      }
      if (!f.devices.empty()) free.push_back(std::move(f));
    }
    return free;
  };
  size_t cuda_total = 0, cpu_total = 0;
  auto cuda_free = free_of(v1::DEVICE_KIND_CUDA, &cuda_total);
  auto cpu_free = free_of(v1::DEVICE_KIND_CPU, &cpu_total);
  v1::DeviceKind kind = v1::DEVICE_KIND_CUDA;
  std::optional<std::vector<Slot>> slots;
  if (given != nullptr && !given->empty()) {
    slots = *given;
    kind = given->front().device.kind();
  } else {
    slots = PlaceRanks(spec.dp(), spec.cp(), cuda_free);
    if (!slots && (spec.cpu_fallback() || cuda_total == 0)) {
      kind = v1::DEVICE_KIND_CPU;
      slots = PlaceRanks(spec.dp(), spec.cp(), cpu_free);
    }
  }
  if (!slots) return std::nullopt;

  const int world = spec.dp() * spec.cp();
  const int64_t generation = entry.status.generation() + 1;
  v1::JobStatus next_gen = entry.status;
  next_gen.set_generation(generation);
  std::map<std::string, int> local_count;
  for (const auto& s : *slots) ++local_count[s.agent_id];
  std::map<std::string, int> local_next;
  std::vector<v1::Assignment> out;
  for (int rank = 0; rank < world; ++rank) {
    const Slot& s = (*slots)[rank];
    v1::Assignment a;
    a.set_job_id(entry.status.job_id());
    a.set_generation(generation);
    a.set_rank(rank);
    a.set_world_size(world);
    a.set_dp(spec.dp());
    a.set_cp(spec.cp());
    a.set_dp_index(rank / spec.cp());
    a.set_cp_index(rank % spec.cp());
    a.set_agent_id(s.agent_id);
    a.set_device_index(s.device.index());
    a.set_device_kind(kind);
    a.set_local_rank(local_next[s.agent_id]++);
    a.set_local_world_size(local_count[s.agent_id]);
    a.set_shard_index(rank / spec.cp());
    a.set_num_shards(spec.dp());
    a.set_rendezvous_prefix(RendezvousPrefix(next_gen));
    a.set_coordinator_address(options_.advertised_address);
    a.set_run_name(spec.name() + "-" + entry.status.job_id());
    if (spec.has_config_yaml()) a.set_config_yaml(spec.config_yaml());
    if (spec.has_config_path()) a.set_config_path(spec.config_path());
    a.set_data_path(spec.data_path());
    a.set_steps(spec.steps());
    a.set_checkpoint_dir(spec.checkpoint().dir());
    a.set_checkpoint_every_steps(spec.checkpoint().every_steps());
    a.set_checkpoint_keep_last(spec.checkpoint().keep_last());
    // A new generation after a fault continues from the newest complete
    // checkpoint (none yet: the worker starts at step 0).
    a.set_resume(spec.checkpoint().resume() || generation > 1);
    a.set_precision(spec.precision());
    a.set_cp_mode(spec.cp_mode());
    a.set_in_process_shrink(spec.in_process_shrink());
    out.push_back(std::move(a));
  }
  // In-memory snapshots: where each rank sends them and, for a restart,
  // which surviving set (if any) the new generation resumes from. An agent
  // counts only if heard from within the settle period: placement waits
  // that long after a fault, so it was alive after the fault (a dead node's
  // memory is gone even before its agent is declared lost).
  if (spec.checkpoint().snapshot_every_steps() > 0) {
    const int64_t settle = options_.recovery.policy.settle_micros >= 0 ? options_.recovery.policy.settle_micros
                                                                        : 2 * options_.heartbeat_interval_ms * 1000;
    const int64_t fresh_since = clock_->NowMicros() - std::max(settle, 2 * options_.heartbeat_interval_ms * 1000);
    std::vector<snapshot::AgentView> views;
    for (const auto& [id, ag] : agents_) {
      snapshot::AgentView v;
      v.agent_id = id;
      v.snapshot_address = ag.status.info().snapshot_address();
      v.usable = ag.status.state() == v1::AGENT_STATE_ALIVE && ag.last_seen_micros >= fresh_since;
      v.holdings.assign(ag.status.snapshots().begin(), ag.status.snapshots().end());
      views.push_back(std::move(v));
    }
    const std::string why = snapshot::ApplySnapshotPlan(spec, views, &out);
    if (!why.empty()) spdlog::info("job {}: {}", entry.status.job_id(), why);
  }
  return out;
}

void Coordinator::Schedule() {
  std::set<std::string> used;
  for (const auto& [id, e] : jobs_) {
    if (!IsActive(e.status.state())) continue;
    for (const auto& a : e.assignments) used.insert(DeviceKey(a.agent_id(), a.device_index()));
  }
  std::vector<JobEntry*> queue;
  for (auto& [id, e] : jobs_) {
    if (e.status.state() == v1::JOB_STATE_QUEUED) queue.push_back(&e);
  }
  std::sort(queue.begin(), queue.end(), [](const JobEntry* a, const JobEntry* b) {
    if (a->status.spec().priority() != b->status.spec().priority()) {
      return a->status.spec().priority() > b->status.spec().priority();
    }
    return a->status.sequence() < b->status.sequence();
  });
  size_t capacity = 0;
  for (const auto& [id, a] : agents_) {
    if (a.status.state() == v1::AGENT_STATE_ALIVE) capacity += a.status.info().devices_size();
  }
  for (JobEntry* e : queue) {
    std::optional<std::vector<v1::Assignment>> placed;
    if (recovery_.Waiting(e->status.job_id())) {
      // Generation g+1 after a fault: the recovery policy picks the devices
      // (full size, elastic shrink, or wait until the replacement deadline).
      const int64_t since = recovery_.WaitingSince(e->status.job_id()).value_or(0);
      recovery::Decision d =
          recovery_.Place(e->status, FreeForRestart(e->status.spec(), used, since), clock_->NowMicros());
      if (d.action == recovery::Action::kWait) continue;
      absl::StatusOr<v1::JobSpec> spec = d.action == recovery::Action::kRestart
                                             ? recovery::SpecFor(e->status.spec(), d)
                                             : absl::StatusOr<v1::JobSpec>(e->status.spec());
      if (d.action == recovery::Action::kFail || !spec.ok()) {
        std::vector<v1::Assignment> none;
        const std::string why = d.action == recovery::Action::kFail ? d.reason : std::string(spec.status().message());
        absl::Status st = Transition(*e, v1::JOB_STATE_FAILED, why, &none);
        if (!st.ok()) spdlog::error("job {}: {}", e->status.job_id(), st.ToString());
        continue;
      }
      if (spec->dp() != e->status.spec().dp()) {
        spdlog::warn("job {}: {}", e->status.job_id(), d.reason);
        *e->status.mutable_spec() = *spec;  // persisted with the placement below
      }
      placed = TryPlace(*e, used, &d.slots);
    } else {
      placed = TryPlace(*e, used);
    }
    if (!placed) {
      // Strict priority: a job that fits the cluster blocks the ones behind
      // it, so small jobs cannot starve a big one. A job larger than every
      // live device together blocks nothing (it waits for more agents).
      const size_t world = static_cast<size_t>(e->status.spec().dp()) * e->status.spec().cp();
      if (world <= capacity) break;
      continue;
    }
    v1::JobStatus next = e->status;
    next.set_generation(placed->front().generation());
    next.set_state(v1::JOB_STATE_PLACED);
    next.set_message("");
    e->started.clear();
    e->done.clear();
    e->reports.clear();
    std::string where;
    for (const auto& a : *placed) {
      used.insert(DeviceKey(a.agent_id(), a.device_index()));
      if (where.size() < 200) where += " " + std::to_string(a.rank()) + "@" + a.agent_id() + ":" + std::to_string(a.device_index());
    }
    absl::Status st = Commit(*e, next, &*placed, {StateEvent(next, "ranks:" + where)});
    std::map<int, std::string> devices;
    for (const auto& a : *placed) devices[a.rank()] = DeviceKey(a.agent_id(), a.device_index());
    recovery_.OnPlaced(next, devices);
    if (!st.ok()) {
      spdlog::error("persisting the placement of job {}: {}", next.job_id(), st.ToString());
      return;
    }
    spdlog::info("job {} placed (generation {}):{}", next.job_id(), next.generation(), where);
  }
}

void Coordinator::Tick() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowMicros();
  bool changed = false;
  for (auto& [id, a] : agents_) {
    if (a.status.state() != v1::AGENT_STATE_ALIVE) continue;
    if (now - a.last_seen_micros <= options_.heartbeat_timeout_micros) continue;
    a.status.set_state(v1::AGENT_STATE_LOST);
    absl::Status st = store_->SaveAgent(a.status);
    if (!st.ok()) spdlog::error("persisting agent {}: {}", id, st.ToString());
    spdlog::warn("agent {} lost: no heartbeat for {} ms", id, (now - a.last_seen_micros) / 1000);
    changed = true;
    for (auto& [jid, e] : jobs_) {
      if (!IsActive(e.status.state())) continue;
      for (const auto& as : e.assignments) {
        if (as.agent_id() != id) continue;
        recovery::Failure f;
        f.kind = recovery::FailureKind::kAgentLost;
        f.agent_id = id;
        f.rank = as.rank();
        f.exit_code = -1;
        Fault(e, "agent " + id + " lost (no heartbeat)", f);
        break;
      }
    }
  }
  (void)changed;
  Schedule();
}

std::vector<v1::AgentStatus> Coordinator::ListAgents() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::AgentStatus> out;
  for (const auto& [id, a] : agents_) out.push_back(a.status);
  return out;
}

std::string Coordinator::PrometheusText() {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream out;
  std::map<v1::JobState, int> by_state;
  for (int s = v1::JOB_STATE_SUBMITTED; s <= v1::JOB_STATE_CANCELLED; ++s) by_state[static_cast<v1::JobState>(s)] = 0;
  for (const auto& [id, e] : jobs_) ++by_state[e.status.state()];
  out << "# HELP kp_jobs Jobs known to the coordinator, by state.\n# TYPE kp_jobs gauge\n";
  for (const auto& [s, n] : by_state) out << "kp_jobs{state=\"" << LowerStateName(s) << "\"} " << n << "\n";
  int alive = 0, lost = 0, devices = 0;
  for (const auto& [id, a] : agents_) {
    if (a.status.state() == v1::AGENT_STATE_ALIVE) {
      ++alive;
      devices += a.status.info().devices_size();
    } else {
      ++lost;
    }
  }
  out << "# HELP kp_agents Registered agents, by state.\n# TYPE kp_agents gauge\n";
  out << "kp_agents{state=\"alive\"} " << alive << "\nkp_agents{state=\"lost\"} " << lost << "\n";
  out << "# HELP kp_devices Devices of live agents.\n# TYPE kp_devices gauge\nkp_devices " << devices << "\n";
  struct Metric {
    const char* name;
    const char* help;
    double (*get)(const v1::Progress&);
  };
  const Metric metrics[] = {
      {"kp_job_step", "Latest training step of rank 0.", [](const v1::Progress& p) { return double(p.step()); }},
      {"kp_job_loss", "Latest training loss of rank 0.", [](const v1::Progress& p) { return p.loss(); }},
      {"kp_job_tokens_per_second", "Training throughput summed over ranks.",
       [](const v1::Progress& p) { return p.tokens_per_s(); }},
  };
  for (const auto& m : metrics) {
    out << "# HELP " << m.name << " " << m.help << "\n# TYPE " << m.name << " gauge\n";
    for (const auto& [id, e] : jobs_) {
      if (!IsActive(e.status.state())) continue;
      out << m.name << "{job=\"" << EscapeLabel(id) << "\",name=\"" << EscapeLabel(e.status.spec().name())
          << "\"} " << m.get(e.status.progress()) << "\n";
    }
  }
  out << recovery_.PrometheusText();
  return out.str();
}

void Coordinator::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_ = true;
  }
  events_cv_.notify_all();
  kv_.Shutdown();
}

}  // namespace kp::coordinator
