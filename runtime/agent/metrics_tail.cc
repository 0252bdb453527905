#include "runtime/agent/metrics_tail.h"

#include <fstream>

#include <nlohmann/json.hpp>

namespace kp::agent {

bool MetricsTail::Poll() {
  std::ifstream in(path_, std::ios::binary);
  if (!in) return false;
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  if (size < offset_) {  // truncated: a new worker writes the file from scratch
    offset_ = 0;
    partial_.clear();
  }
  if (size == offset_) return false;
  const int64_t n = std::min<int64_t>(size - offset_, 1 << 20);
  std::string buf(static_cast<size_t>(n), '\0');
  in.seekg(offset_);
  in.read(buf.data(), n);
  offset_ += in.gcount();
  buf.resize(static_cast<size_t>(in.gcount()));
  partial_ += buf;
  const int64_t before = progress_.lines;
  size_t start = 0, end;
  while ((end = partial_.find('\n', start)) != std::string::npos) {
    ParseLine(partial_.substr(start, end - start));
    start = end + 1;
  }
  partial_.erase(0, start);
  if (partial_.size() > (1 << 16)) {  // a "line" that never ends
    ++progress_.malformed_lines;
    partial_.clear();
  }
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

}  // namespace kp::agent
