#include "runtime/engine/metrics.h"

#include <algorithm>

#include <cmath>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"

namespace kp::engine {

double TrainingFlopsPerToken(const ModelConfig& m, int64_t non_embedding_params, int64_t seq_len) {
  return 6.0 * static_cast<double>(non_embedding_params) +
         12.0 * static_cast<double>(m.n_layers) * static_cast<double>(m.d_model) *
             static_cast<double>(seq_len);
}

absl::StatusOr<std::unique_ptr<MetricsLogger>> MetricsLogger::Create(const std::string& path,
                                                                     int64_t log_every,
                                                                     int64_t total_steps) {
  std::unique_ptr<MetricsLogger> logger(new MetricsLogger(log_every, total_steps));
  if (!path.empty()) {
    logger->out_.open(path, std::ios::app);
    if (!logger->out_) {
      return absl::InvalidArgumentError(absl::StrCat("cannot open metrics file ", path));
    }
  }
  return logger;
}

bool IsLoggedStep(int64_t step, int64_t every, int64_t total_steps) {
  return step % std::max<int64_t>(every, 1) == 0 || step + 1 == total_steps;
}

void MetricsLogger::OnStep(const StepMetrics& m) {
  if (out_.is_open()) {
    // JSON has no NaN: a skipped step's non-finite values are written as null.
    auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
    nlohmann::json j = {{"step", m.step},
                        {"loss", num(m.loss)},
                        {"lr", m.lr},
                        {"grad_norm", num(m.grad_norm)},
                        {"tokens_per_s", m.tokens_per_s},
                        {"mfu", m.mfu},
                        {"peak_mem_bytes", m.peak_mem_bytes},
                        {"time_s", m.time_s}};
    if (m.skipped) j["skipped"] = true;
    for (const auto& [key, value] : m.extra) j[key] = num(value);
    out_ << j.dump() << "\n";
    out_.flush();
  }
  if (m.skipped) {
    spdlog::warn("step {}: non-finite loss {} or grad norm {}: update skipped", m.step, m.loss,
                 m.grad_norm);
    return;
  }
  if (IsLoggedStep(m.step, log_every_, total_steps_)) {
    spdlog::info("step {:>6}/{} | loss {:.4f} | lr {:.2e} | grad {:.3f} | {:.0f} tok/s | mfu {:.1f}% | mem {:.0f} MiB | {:.3f} s",
                 m.step + 1, total_steps_, m.loss, m.lr, m.grad_norm, m.tokens_per_s,
                 100.0 * m.mfu, static_cast<double>(m.peak_mem_bytes) / (1 << 20), m.time_s);
  }
}

}  // namespace kp::engine
