// Per-step metrics: a JSON line per optimizer step and a live progress line.
//
// MFU uses the PaLM formula (Chowdhury et al. 2022, appendix B): training
// FLOPs per token = 6 N + 12 L d T, where N is the parameter count without
// the input embedding (a lookup, not a matmul; the LM head counts), L the
// layers, d = d_model and T the sequence length (the attention scores and
// the weighted sum, forward + backward, counted without the causal saving).
// Recomputation by activation checkpointing is not counted: MFU measures
// useful work. MFU = FLOPs per token * tokens/s / peak FLOP/s of the devices.
#ifndef KP_RUNTIME_ENGINE_METRICS_H_
#define KP_RUNTIME_ENGINE_METRICS_H_

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/common/status.h"
#include "runtime/engine/config.h"

namespace kp::engine {

struct StepMetrics {
  int64_t step = 0;  // the optimizer step just taken (0-based)
  double loss = 0;   // mean over the step's micro-batches (this rank)
  double lr = 0;
  double grad_norm = 0;  // before clipping
  double tokens_per_s = 0;  // all dp ranks together
  double mfu = 0;           // 0 when the peak FLOP/s is unknown
  int64_t peak_mem_bytes = 0;
  double time_s = 0;  // wall time of this step
  bool skipped = false;  // non-finite loss or gradients: no update
  // More keys for the step's JSON line, added by decorating sinks (FP8 layer
  // statistics: runtime/fp8/metrics_sink.h); written in this order.
  std::vector<std::pair<std::string, double>> extra;
};

double TrainingFlopsPerToken(const ModelConfig& model, int64_t non_embedding_params,
                             int64_t seq_len);

// The steps that log a progress line, and on which decorating sinks add
// their more expensive keys: every `every` steps from the first (every < 1
// counts as 1), and the last.
bool IsLoggedStep(int64_t step, int64_t every, int64_t total_steps);

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  virtual void OnStep(const StepMetrics& m) = 0;
};

// Appends {"step","loss","lr","grad_norm","tokens_per_s","mfu",
// "peak_mem_bytes","time_s"} (and "skipped" when true) as one JSON object per
// line to `jsonl_path` (if non-empty, flushed per line), and logs a progress
// line every `log_every` steps.
class MetricsLogger final : public MetricsSink {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsLogger>> Create(const std::string& jsonl_path,
                                                               int64_t log_every,
                                                               int64_t total_steps);
  void OnStep(const StepMetrics& m) override;

 private:
  MetricsLogger(int64_t log_every, int64_t total_steps)
      : log_every_(log_every), total_steps_(total_steps) {}
  std::ofstream out_;
  int64_t log_every_;
  int64_t total_steps_;
};

}  // namespace kp::engine

#endif  // KP_RUNTIME_ENGINE_METRICS_H_
