#include "runtime/coordinator/recovery/recovery_set.h"

#include <algorithm>
#include <sstream>

#include "runtime/coordinator/recovery/batch_config.h"

namespace kp::coordinator::recovery {
namespace {

// "agent#index" -> (agent, index).
std::optional<std::pair<std::string, int>> ParseDevice(const std::string& device) {
  const auto hash = device.rfind('#');
  if (hash == std::string::npos || hash + 1 >= device.size()) return std::nullopt;
  try {
    return std::make_pair(device.substr(0, hash), std::stoi(device.substr(hash + 1)));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

JobShape ShapeOf(const v1::JobSpec& spec) {
  JobShape s;
  s.dp = spec.dp();
  s.cp = spec.cp();
  s.elastic = spec.elastic();
  s.max_restarts = spec.max_restarts();
  s.min_dp = spec.dp();
  auto it = spec.labels().find(kMinDpLabel);
  if (spec.min_dp() > 0) {
    if (spec.min_dp() <= spec.dp()) s.min_dp = spec.min_dp();
  } else if (it != spec.labels().end()) {
    try {
      const int v = std::stoi(it->second);
      if (v >= 1 && v <= spec.dp()) s.min_dp = v;
    } catch (const std::exception&) {
      // Not a number: no shrink, as without the label.
    }
  }
  if (spec.has_config_yaml()) {
    if (auto b = ReadBatchShape(spec.config_yaml()); b.ok()) {
      s.micro_batch = b->micro_batch;
      s.grad_accum = b->grad_accum;
    }
  }
  return s;
}

absl::StatusOr<v1::JobSpec> SpecFor(const v1::JobSpec& spec, const Decision& decision) {
  if (decision.action != Action::kRestart || decision.dp == spec.dp()) return spec;
  if (!spec.has_config_yaml()) {
    return absl::FailedPreconditionError("a shrink needs the job's config inline (config_yaml)");
  }
  v1::JobSpec next = spec;
  next.set_dp(decision.dp);
  KP_ASSIGN_OR_RETURN(std::string yaml, RewriteForLayout(spec.config_yaml(), decision.dp, decision.batch));
  next.set_config_yaml(yaml);
  return next;
}

JobRecovery& RecoverySet::RecoveryOf(const v1::JobStatus& job) {
  auto& slot = jobs_[job.job_id()];
  if (!slot) slot = std::make_unique<JobRecovery>(ShapeOf(job.spec()), config_.policy, job.restarts());
  return *slot;
}

Decision RecoverySet::OnFault(const v1::JobStatus& job, const Failure& failure, int64_t now_micros) {
  JobRecovery& r = RecoveryOf(job);
  auto g = generations_.find(job.job_id());
  if (config_.exclude_stragglers && g != generations_.end() && g->second.generation == failure.generation &&
      g->second.detector) {
    for (const auto& device : g->second.detector->StragglerDevices()) {
      auto d = ParseDevice(device);
      if (!d) continue;
      r.ExcludeDevice(d->first, d->second, "straggler in generation " + std::to_string(failure.generation));
    }
  }
  return r.OnFailure(failure, now_micros);
}

bool RecoverySet::Waiting(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  return it != jobs_.end() && it->second->waiting();
}

std::optional<int64_t> RecoverySet::WaitingSince(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second->waiting_since();
}

Decision RecoverySet::Place(const v1::JobStatus& job, const std::vector<FreeDevices>& free, int64_t now_micros) {
  return RecoveryOf(job).Place(now_micros, free);
}

void RecoverySet::OnPlaced(const v1::JobStatus& job, const std::map<int, std::string>& devices) {
  Generation& g = generations_[job.job_id()];
  g.generation = job.generation();
  g.detector = std::make_unique<straggler::StragglerDetector>(config_.straggler);
  for (const auto& [rank, device] : devices) g.detector->SetDevice(rank, device);
}

std::vector<straggler::StragglerEvent> RecoverySet::OnProgress(const v1::JobStatus& job, int rank, int64_t step,
                                                               int64_t now_micros) {
  auto it = generations_.find(job.job_id());
  if (it == generations_.end() || it->second.generation != job.generation() || !it->second.detector) return {};
  it->second.detector->ObserveProgress(rank, step, now_micros);
  return it->second.detector->Evaluate();
}

std::vector<straggler::StragglerEvent> RecoverySet::OnReport(const v1::JobStatus& job,
                                                             const v1::WorkerReport& report, int64_t now_micros) {
  auto it = generations_.find(job.job_id());
  if (it == generations_.end() || it->second.generation != job.generation() || !it->second.detector) return {};
  if (report.compute_s() > 0) {
    it->second.detector->ObserveMeasured(report.rank(), report.timed_step(), report.compute_s());
  } else {
    it->second.detector->ObserveProgress(report.rank(), report.step(), now_micros);
  }
  return it->second.detector->Evaluate();
}

std::vector<std::string> RecoverySet::History(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return {};
  return it->second->history();
}

bool RecoverySet::IsExcluded(const std::string& job_id, const std::string& device) const {
  auto it = jobs_.find(job_id);
  auto d = ParseDevice(device);
  return it != jobs_.end() && d && it->second->IsExcluded(d->first, d->second);
}

void RecoverySet::Restore(const v1::JobStatus& job, const std::vector<v1::JobEvent>& events,
                          const std::vector<v1::Assignment>& assignments) {
  const v1::JobState state = job.state();
  if (state == v1::JOB_STATE_COMPLETED || state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_CANCELLED) return;
  std::vector<std::string> history;
  std::set<std::pair<std::string, int>> excluded;
  int64_t last_failed = -1;
  std::optional<int64_t> last_fault_micros;
  for (const auto& e : events) {
    if (e.type() != v1::EVENT_TYPE_FAULT) continue;
    // A rank that left while its survivors re-formed in-process: the
    // generation went on, and the rank's device is not excluded.
    if (e.message().rfind(kInProcessShrinkPrefix, 0) == 0) continue;
    history.push_back(e.message());
    if (!e.device().empty()) {
      if (auto d = ParseDevice(e.device())) excluded.insert(*d);
      continue;
    }
    if (e.generation() >= last_failed) {
      last_failed = e.generation();
      last_fault_micros = e.time_micros();
    }
  }
  if (!history.empty()) {
    std::optional<int64_t> waiting;
    if (state == v1::JOB_STATE_QUEUED && last_failed == job.generation()) waiting = last_fault_micros;
    // JobStatus.restarts counts a restart when the fault requeues the job;
    // the policy counts it when the next generation is placed.
    const int restarts = waiting ? std::max(0, job.restarts() - 1) : job.restarts();
    auto r = std::make_unique<JobRecovery>(ShapeOf(job.spec()), config_.policy, restarts);
    r->Restore(std::move(history), excluded, last_failed, waiting);
    jobs_[job.job_id()] = std::move(r);
  }
  if ((state == v1::JOB_STATE_PLACED || state == v1::JOB_STATE_RUNNING) && !assignments.empty()) {
    std::map<int, std::string> devices;
    for (const auto& a : assignments) devices[a.rank()] = a.agent_id() + "#" + std::to_string(a.device_index());
    OnPlaced(job, devices);
  }
}

void RecoverySet::Forget(const std::string& job_id) {
  jobs_.erase(job_id);
  generations_.erase(job_id);
}

std::string RecoverySet::PrometheusText() const {
  std::ostringstream out;
  out << straggler::StragglerDetector::PrometheusHeader();
  for (const auto& [id, g] : generations_) {
    if (g.detector) out << g.detector->PrometheusSamples(id);
  }
  int waiting = 0;
  for (const auto& [id, r] : jobs_) waiting += r->waiting();
  out << "# HELP kp_jobs_waiting_for_replacement Jobs whose next generation waits for devices after a fault.\n"
      << "# TYPE kp_jobs_waiting_for_replacement gauge\n"
      << "kp_jobs_waiting_for_replacement " << waiting << "\n";
  return out.str();
}

}  // namespace kp::coordinator::recovery
