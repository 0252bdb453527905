#include "runtime/fp8/metrics_sink.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/fp8/layer_state.h"
#include "runtime/fp8/log.h"

namespace kp::fp8 {

Fp8MetricsSink::Fp8MetricsSink(engine::MetricsSink* inner, std::shared_ptr<Fp8Session> session,
                               int64_t every, int64_t total_steps)
    : inner_(inner), session_(std::move(session)), every_(every), total_steps_(total_steps) {}

void Fp8MetricsSink::OnStep(const engine::StepMetrics& m) {
  if (!engine::IsLoggedStep(m.step, every_, total_steps_) || !session_) {
    inner_->OnStep(m);
    return;
  }
  engine::StepMetrics out = m;
  int64_t layers = 0, underflow_total = 0, worst = 0;
  std::string worst_name;
  // Underflow counts restart here, so each report covers the steps since
  // the previous one.
  for (const Fp8LayerMetrics& l : session_->Metrics(/*reset_underflow=*/true)) {
    if (!l.fp8) continue;
    ++layers;
    int64_t layer_underflow = 0;
    const std::string key = absl::StrCat("fp8.", l.name, ".");
    for (int r = 0; r < kNumRoles; ++r) {
      out.extra.emplace_back(absl::StrCat(key, "amax_", RoleName(r)), l.amax[r]);
      out.extra.emplace_back(absl::StrCat(key, "scale_", RoleName(r)), l.scale[r]);
      out.extra.emplace_back(absl::StrCat(key, "underflow_", RoleName(r)),
                             static_cast<double>(l.underflow[r]));
      layer_underflow += l.underflow[r];
    }
    underflow_total += layer_underflow;
    if (layer_underflow > worst) worst = layer_underflow, worst_name = l.name;
  }
  out.extra.emplace_back("fp8.layers", static_cast<double>(layers));
  out.extra.emplace_back("fp8.underflow", static_cast<double>(underflow_total));
  if (underflow_total > 0) {
    LogInfo(absl::StrCat("fp8 step ", m.step + 1, ": ", underflow_total,
                         " nonzero values cast to 0 since the last report over ", layers,
                         " FP8 layers (most in ", worst_name, ": ", worst, ")"));
  }
  inner_->OnStep(out);
}

}  // namespace kp::fp8
