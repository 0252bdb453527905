#include "runtime/agent/metrics_tail.h"

#include <fstream>

#include <nlohmann/json.hpp>

#include "runtime/worker/step_time/step_time_file.h"

namespace kp::agent {

MetricsTail::MetricsTail(std::string path) {
  step_times_.path = worker::step_time::StepTimePath(path);
  metrics_.path = std::move(path);
}

bool MetricsTail::Follower::Read(const std::function<void(const std::string&)>& line) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return true;
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  if (size < offset) {  // truncated: a new worker writes the file from scratch
    offset = 0;
    partial.clear();
  }
  if (size == offset) return true;
  const int64_t n = std::min<int64_t>(size - offset, 1 << 20);
  std::string buf(static_cast<size_t>(n), '\0');
  in.seekg(offset);
  in.read(buf.data(), n);
  offset += in.gcount();
  buf.resize(static_cast<size_t>(in.gcount()));
  partial += buf;
  size_t start = 0, end;
  while ((end = partial.find('\n', start)) != std::string::npos) {
    line(partial.substr(start, end - start));
    start = end + 1;
  }
  partial.erase(0, start);
  if (partial.size() > (1 << 16)) {  // a "line" that never ends
    partial.clear();
    return false;
  }
  return true;
}

bool MetricsTail::Poll() {
  const int64_t before = progress_.lines;
  if (!metrics_.Read([this](const std::string& l) { ParseLine(l); })) ++progress_.malformed_lines;
  if (!step_times_.Read([this](const std::string& l) { ParseStepTimeLine(l); })) ++progress_.malformed_lines;
  return progress_.lines > before;
}

void MetricsTail::ParseLine(const std::string& line) {
  if (line.find_first_not_of(" \t\r") == std::string::npos) return;
  auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    ++progress_.malformed_lines;
    return;
  }
  auto num = [&](const char* key, auto* out) {
    auto it = j.find(key);
    if (it != j.end() && it->is_number()) *out = it->template get<std::decay_t<decltype(*out)>>();
  };
  num("step", &progress_.step);
  num("loss", &progress_.loss);
  num("tokens_per_s", &progress_.tokens_per_s);
  ++progress_.lines;
}

void MetricsTail::ParseStepTimeLine(const std::string& line) {
  if (line.find_first_not_of(" \t\r") == std::string::npos) return;
  auto t = worker::step_time::ParseStepTime(line);
  if (!t) {
    ++progress_.malformed_lines;
    return;
  }
  progress_.timed_step = t->step;
  progress_.compute_s = t->compute_s;
  progress_.comm_wait_s = t->comm_wait_s;
  ++progress_.lines;
}

}  // namespace kp::agent
