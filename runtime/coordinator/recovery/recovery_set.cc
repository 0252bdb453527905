#include "runtime/coordinator/recovery/recovery_set.h"

#include <sstream>

#include "runtime/coordinator/recovery/batch_config.h"

namespace kp::coordinator::recovery {

JobShape ShapeOf(const v1::JobSpec& spec) {
  JobShape s;
  s.dp = spec.dp();
  s.cp = spec.cp();
  s.elastic = spec.elastic();
  s.max_restarts = spec.max_restarts();
  s.min_dp = spec.dp();
  auto it = spec.labels().find(kMinDpLabel);
  if (it != spec.labels().end()) {
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
      const auto hash = device.rfind('#');
      if (hash == std::string::npos) continue;
      r.ExcludeDevice(device.substr(0, hash), std::stoi(device.substr(hash + 1)),
                      "straggler in generation " + std::to_string(failure.generation));
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
