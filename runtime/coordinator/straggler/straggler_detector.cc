#include "runtime/coordinator/straggler/straggler_detector.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace kp::coordinator::straggler {

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

StragglerDetector::StragglerDetector(StragglerOptions options) : options_(options) {
  if (options_.window < 1) options_.window = 1;
  if (options_.min_ranks < 2) options_.min_ranks = 2;
}

void StragglerDetector::SetDevice(int rank, std::string device) { ranks_[rank].device = std::move(device); }

void StragglerDetector::Observe(int rank, double step_time_s) {
  if (!(step_time_s > 0)) return;
  Rank& r = ranks_[rank];
  r.times.push_back(step_time_s);
  while (static_cast<int>(r.times.size()) > options_.window) r.times.pop_front();
}

void StragglerDetector::ObserveProgress(int rank, int64_t step, int64_t time_micros) {
  Rank& r = ranks_[rank];
  if (r.last_measured_step) return;
  if (r.last_progress && step > r.last_progress->first && time_micros > r.last_progress->second) {
    Observe(rank, (time_micros - r.last_progress->second) / 1e6 / double(step - r.last_progress->first));
  }
  if (!r.last_progress || step != r.last_progress->first) r.last_progress = {step, time_micros};
}

void StragglerDetector::ObserveMeasured(int rank, int64_t step, double compute_s) {
  if (!(compute_s > 0)) return;
  Rank& r = ranks_[rank];
  if (!r.last_measured_step) {
    r.times.clear();  // progress-derived so far: not comparable
  } else if (step <= *r.last_measured_step) {
    return;
  }
  r.last_measured_step = step;
  Observe(rank, compute_s);
}

std::optional<double> StragglerDetector::StepTime(int rank) const {
  auto it = ranks_.find(rank);
  if (it == ranks_.end() || it->second.times.empty()) return std::nullopt;
  return Median({it->second.times.begin(), it->second.times.end()});
}

std::vector<StragglerEvent> StragglerDetector::Evaluate() {
  std::vector<StragglerEvent> events;
  std::map<int, double> medians;
  for (const auto& [rank, r] : ranks_) {
    if (static_cast<int>(r.times.size()) >= options_.window) medians[rank] = *StepTime(rank);
  }
  if (static_cast<int>(medians.size()) < options_.min_ranks) return events;
  std::vector<double> all;
  for (const auto& [rank, m] : medians) all.push_back(m);
  const double median = Median(all);
  for (auto& [rank, m] : medians) {
    Rank& r = ranks_[rank];
    const bool slow = m > options_.factor * median;
    if (slow == r.straggler) continue;
    r.straggler = slow;
    StragglerEvent e;
    e.rank = rank;
    e.device = r.device;
    e.straggler = slow;
    e.step_time_s = m;
    e.median_s = median;
    char buf[256];
    std::snprintf(buf, sizeof(buf), "rank %d%s%s: step time %.3f s = %.2fx the median %.3f s over %d steps%s", rank,
                  r.device.empty() ? "" : " on ", r.device.c_str(), m, m / median, median, options_.window,
                  slow ? " (straggler)" : " (recovered)");
    e.message = buf;
    events.push_back(std::move(e));
  }
  return events;
}

bool StragglerDetector::IsStraggler(int rank) const {
  auto it = ranks_.find(rank);
  return it != ranks_.end() && it->second.straggler;
}

std::vector<std::string> StragglerDetector::StragglerDevices() const {
  std::vector<std::string> out;
  for (const auto& [rank, r] : ranks_) {
    if (r.straggler && !r.device.empty()) out.push_back(r.device);
  }
  return out;
}

std::string StragglerDetector::PrometheusHeader() {
  return "# HELP kp_rank_step_time_seconds Median step time of a rank over the straggler window.\n"
         "# TYPE kp_rank_step_time_seconds gauge\n"
         "# HELP kp_rank_straggler 1 when the rank is flagged as a straggler.\n"
         "# TYPE kp_rank_straggler gauge\n";
}

std::string StragglerDetector::PrometheusSamples(const std::string& job_id) const {
  std::ostringstream out;
  for (const auto& [rank, r] : ranks_) {
    auto t = StepTime(rank);
    if (!t) continue;
    const std::string labels = "{job=\"" + job_id + "\",rank=\"" + std::to_string(rank) + "\"}";
    out << "kp_rank_step_time_seconds" << labels << " " << *t << "\n";
    out << "kp_rank_straggler" << labels << " " << (r.straggler ? 1 : 0) << "\n";
  }
  return out.str();
}

}  // namespace kp::coordinator::straggler
