#include "runtime/worker/step_time/step_time_file.h"

#include <nlohmann/json.hpp>


namespace kp::worker::step_time {

std::string StepTimePath(const std::string& metrics_jsonl) {
  constexpr char kExt[] = ".jsonl";
  const size_t n = sizeof(kExt) - 1;
  if (metrics_jsonl.size() >= n && metrics_jsonl.compare(metrics_jsonl.size() - n, n, kExt) == 0) {
    return metrics_jsonl.substr(0, metrics_jsonl.size() - n) + ".steps.jsonl";
  }
  return metrics_jsonl + ".steps.jsonl";
}

std::string FormatStepTime(const StepTime& t) {
  nlohmann::json j;
  j["step"] = t.step;
  j["rank"] = t.rank;
  j["compute_s"] = t.compute_s;
  j["comm_wait_s"] = t.comm_wait_s;
  return j.dump();
}

std::optional<StepTime> ParseStepTime(const std::string& line) {
  auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  for (const char* key : {"step", "rank", "compute_s", "comm_wait_s"}) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number()) return std::nullopt;
  }
  StepTime t;
  t.step = j["step"].get<int64_t>();
  t.rank = j["rank"].get<int>();
  t.compute_s = j["compute_s"].get<double>();
  t.comm_wait_s = j["comm_wait_s"].get<double>();
  if (t.step < 0 || !(t.compute_s >= 0) || !(t.comm_wait_s >= 0)) return std::nullopt;
  return t;
}

absl::StatusOr<std::chrono::milliseconds> SlowDownFor(const char* env_value, int rank) {
  if (env_value == nullptr || *env_value == '\0') return std::chrono::milliseconds(0);
  const std::string value = env_value;
  auto bad = [&] {
    return absl::InvalidArgumentError(std::string(kSlowRankEnv) + "=\"" + value +
                                      "\": expected <rank>:<milliseconds>[,...] (test only)");
  };
  // Digits only, at most 9 of them: no sign, no overflow.
  auto number = [](const std::string& s, int64_t* out) {
    if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) return false;
    *out = std::stoll(s);
    return true;
  };
  std::chrono::milliseconds out(0);
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    if (comma == std::string::npos) comma = value.size();
    const std::string item = value.substr(start, comma - start);
    const size_t colon = item.find(':');
    int64_t r = 0, ms = 0;
    if (colon == std::string::npos || !number(item.substr(0, colon), &r) || !number(item.substr(colon + 1), &ms)) {
      return bad();
    }
    if (r == rank) out = std::chrono::milliseconds(ms);
    start = comma + 1;
  }
  return out;
}

}  // namespace kp::worker::step_time
