// Per-layer FP8 statistics in the training metrics: every `every` steps (and
// the last), each FP8 layer's amax, scale and underflow count per role (x, w,
// grad) join the step's JSON line as "fp8.<layer>.<stat>_<role>", with
// "fp8.layers" (layers in FP8) and "fp8.underflow" (all layers' underflows
// since the previous report); a log line names the layer with the most
// underflows when there are any.
//
// Why a decorating sink: reading the statistics waits for the GPU, so it
// happens only on the steps that are logged anyway, and the engine's
// MetricsLogger needs to know nothing about FP8.
#ifndef KP_RUNTIME_FP8_METRICS_SINK_H_
#define KP_RUNTIME_FP8_METRICS_SINK_H_

#include <cstdint>
#include <memory>

#include "runtime/engine/metrics.h"
#include "runtime/fp8/fp8_linear.h"

namespace kp::fp8 {

class Fp8MetricsSink final : public engine::MetricsSink {
 public:
  // inner: where the (extended) step metrics go; not owned, outlives this.
  Fp8MetricsSink(engine::MetricsSink* inner, std::shared_ptr<Fp8Session> session, int64_t every,
                 int64_t total_steps);
  void OnStep(const engine::StepMetrics& m) override;

 private:
  engine::MetricsSink* inner_;
  std::shared_ptr<Fp8Session> session_;
  int64_t every_;
  int64_t total_steps_;
};

}  // namespace kp::fp8

#endif  // KP_RUNTIME_FP8_METRICS_SINK_H_
