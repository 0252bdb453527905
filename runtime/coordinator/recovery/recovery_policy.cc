#include "runtime/coordinator/recovery/recovery_policy.h"

#include <signal.h>
#include <string.h>

#include <algorithm>

#include "runtime/coordinator/recovery/nvlink_placement.h"

namespace kp::coordinator::recovery {
namespace {

std::string ExitText(int code) {
  std::string s = "exited with code " + std::to_string(code);
  if (code > 128 && code < 128 + 65) {
    const char* name = sigabbrev_np(code - 128);
    if (name != nullptr) s += std::string(" (SIG") + name + ")";
  } else if (code == kExitCollectiveHung) {
    s += " (collective timed out: watchdog abort)";
  } else if (code == kExitBadConfig) {
    s += " (bad flags or config)";
  }
  return s;
}

std::string Seconds(int64_t micros) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", micros / 1e6);
  return buf;
}

}  // namespace

std::string DescribeFailure(const Failure& f) {
  std::string where = f.agent_id.empty() ? "" : " on " + f.agent_id;
  std::string rank = f.rank >= 0 ? "rank " + std::to_string(f.rank) : "a worker";
  std::string what;
  switch (f.kind) {
    case FailureKind::kWorkerExit:
      what = rank + where + " " + ExitText(f.exit_code);
      break;
    case FailureKind::kWorkerStartFailed:
      what = rank + where + " failed to start";
      break;
    case FailureKind::kAgentLost:
      what = "agent " + f.agent_id + " lost (no heartbeat)";
      break;
    case FailureKind::kCollectiveTimeout:
      what = rank + where + " reported a collective timeout";
      break;
  }
  if (!f.message.empty()) what += ": " + f.message;
  return "generation " + std::to_string(f.generation) + ": " + what;
}

std::optional<BatchShape> ShrinkBatch(const BatchShape& old, int old_dp, int new_dp) {
  if (old.micro_batch < 1 || old.grad_accum < 1 || old_dp < 1 || new_dp < 1) return std::nullopt;
  const int64_t global = old.micro_batch * old.grad_accum * old_dp;
  if (global % new_dp != 0) return std::nullopt;
  const int64_t per_rank = global / new_dp;
  for (int64_t mb = std::min(old.micro_batch, per_rank); mb >= 1; --mb) {
    if (per_rank % mb == 0) return BatchShape{mb, per_rank / mb};
  }
  return std::nullopt;
}

JobRecovery::JobRecovery(JobShape shape, RecoveryOptions options, int restarts_so_far)
    : shape_(shape), options_(std::move(options)), restarts_(restarts_so_far) {}

int JobRecovery::max_restarts() const {
  return shape_.max_restarts > 0 ? shape_.max_restarts : options_.default_max_restarts;
}

std::string JobRecovery::HistoryText() const {
  std::string s = std::to_string(history_.size()) + (history_.size() == 1 ? " fault: " : " faults: ");
  for (size_t i = 0; i < history_.size(); ++i) s += (i ? "; " : "") + history_[i];
  return s;
}

Decision JobRecovery::Fail(const std::string& why) {
  waiting_since_micros_.reset();
  Decision d;
  d.action = Action::kFail;
  d.reason = why + " [" + HistoryText() + "]";
  return d;
}

Decision JobRecovery::OnFailure(const Failure& f, int64_t now_micros) {
  history_.push_back(DescribeFailure(f));
  const bool already = f.generation <= last_failed_generation_;
  last_failed_generation_ = std::max(last_failed_generation_, f.generation);
  Decision d;
  if (already) {
    d.action = Action::kIgnore;
    d.reason = "generation " + std::to_string(f.generation) + " already ended";
    return d;
  }
  d.action = Action::kWait;
  if (f.kind == FailureKind::kWorkerExit && options_.permanent_exit_codes.count(f.exit_code)) {
    return Fail("rank " + std::to_string(f.rank) + " " + ExitText(f.exit_code) + ", which a restart cannot fix");
  }
  if (restarts_ >= max_restarts()) {
    return Fail(max_restarts() == 0 ? "restarts disabled (max_restarts = 0)"
                                    : "gave up after " + std::to_string(restarts_) + " restarts (max_restarts = " +
                                          std::to_string(max_restarts()) + ")");
  }
  waiting_since_micros_ = now_micros;
  d.wait_until_micros = now_micros + options_.replacement_deadline_micros;
  d.reason = "restart " + std::to_string(restarts_ + 1) + " of " + std::to_string(max_restarts()) + " after " +
             history_.back();
  return d;
}

std::vector<FreeDevices> JobRecovery::Usable(const std::vector<FreeDevices>& free) const {
  std::vector<FreeDevices> out;
  for (const auto& f : free) {
    FreeDevices u{f.agent_id, {}};
    for (const auto& d : f.devices) {
      if (!IsExcluded(f.agent_id, d.index())) u.devices.push_back(d);
    }
    if (!u.devices.empty()) out.push_back(std::move(u));
  }
  return out;
}

Decision JobRecovery::Place(int64_t now_micros, const std::vector<FreeDevices>& free) {
  const std::vector<FreeDevices> usable = Usable(free);
  size_t available = 0;
  for (const auto& f : usable) available += f.devices.size();
  const bool restart = waiting_since_micros_.has_value();
  auto restart_with = [&](int dp, BatchShape batch, std::vector<Slot> slots, std::string why) {
    Decision d;
    d.action = Action::kRestart;
    d.dp = dp;
    d.cp = shape_.cp;
    d.batch = batch;
    d.slots = std::move(slots);
    d.reason = std::move(why);
    if (restart) {
      ++restarts_;
      waiting_since_micros_.reset();
    }
    return d;
  };
  if (restart && now_micros < *waiting_since_micros_ + std::max<int64_t>(0, options_.settle_micros)) {
    Decision d;
    d.action = Action::kWait;
    d.wait_until_micros = *waiting_since_micros_ + options_.replacement_deadline_micros;
    d.reason = "settling after the fault";
    return d;
  }
  const BatchShape full{shape_.micro_batch, shape_.grad_accum};
  if (auto slots = PlaceRanksPreferNvlink(shape_.dp, shape_.cp, usable)) {
    return restart_with(shape_.dp, full, std::move(*slots), "full size");
  }
  std::string shrink_note;
  if (restart && shape_.elastic) {
    const int most = static_cast<int>(available / static_cast<size_t>(shape_.cp));
    for (int dp = std::min(most, shape_.dp - 1); dp >= std::max(1, shape_.min_dp); --dp) {
      auto batch = ShrinkBatch(full, shape_.dp, dp);
      if (!batch) continue;
      auto slots = PlaceRanksPreferNvlink(dp, shape_.cp, usable);
      if (!slots) continue;
      return restart_with(dp, *batch, std::move(*slots),
                          "shrunk dp " + std::to_string(shape_.dp) + " -> " + std::to_string(dp) +
                              ", global batch kept at " +
                              std::to_string(full.micro_batch * full.grad_accum * shape_.dp) + " (micro_batch " +
                              std::to_string(batch->micro_batch) + ", grad_accum " +
                              std::to_string(batch->grad_accum) + ")");
    }
    shrink_note = shape_.micro_batch < 1 ? "; cannot shrink: the job's batch shape is unknown"
                                         : "; cannot shrink to dp >= min_dp " + std::to_string(shape_.min_dp);
  }
  Decision d;
  d.action = Action::kWait;
  const size_t need = static_cast<size_t>(shape_.dp) * shape_.cp;
  const std::string counts = "needs " + std::to_string(need) + " devices, " + std::to_string(available) + " usable";
  if (!restart) {
    d.reason = counts;  // first placement: queue, no deadline
    return d;
  }
  d.wait_until_micros = *waiting_since_micros_ + options_.replacement_deadline_micros;
  if (now_micros >= d.wait_until_micros) {
    return Fail("no replacement within " + Seconds(options_.replacement_deadline_micros) + ": " + counts +
                shrink_note);
  }
  d.reason = "waiting for a replacement: " + counts + shrink_note;
  return d;
}

void JobRecovery::ExcludeDevice(const std::string& agent_id, int device_index, const std::string& why) {
  if (excluded_.insert({agent_id, device_index}).second) {
    history_.push_back("excluded " + agent_id + "#" + std::to_string(device_index) + ": " + why);
  }
}

void JobRecovery::Restore(std::vector<std::string> history, const std::set<std::pair<std::string, int>>& excluded,
                          int64_t last_failed_generation, std::optional<int64_t> waiting_since_micros) {
  history_ = std::move(history);
  excluded_ = excluded;
  last_failed_generation_ = last_failed_generation;
  waiting_since_micros_ = waiting_since_micros;
}

bool JobRecovery::IsExcluded(const std::string& agent_id, int device_index) const {
  return excluded_.count({agent_id, device_index}) > 0;
}

}  // namespace kp::coordinator::recovery
