#include "runtime/fp8/metrics_sink.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/fp8/log.h"

namespace kp::fp8 {
namespace {

constexpr const char* kRoleNames[kNumRoles] = {"x", "w", "grad"};

}  // namespace

Fp8MetricsSink::Fp8MetricsSink(engine::MetricsSink* inner, std::shared_ptr<Fp8Session> session,
                               int64_t every, int64_t total_steps)
    : inner_(inner), session_(std::move(session)), every_(std::max<int64_t>(every, 1)),
      total_steps_(total_steps) {}

void Fp8MetricsSink::OnStep(const engine::StepMetrics& m) {
  const bool due = m.step % every_ == 0 || m.step + 1 == total_steps_;
  if (!due || !session_) {
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
    for (int r = 0; r < kNumRoles; ++r) {
      const std::string key = absl::StrCat("fp8.", l.name, ".");
      out.extra.emplace_back(absl::StrCat(key, "amax_", kRoleNames[r]), l.amax[r]);
      out.extra.emplace_back(absl::StrCat(key, "scale_", kRoleNames[r]), l.scale[r]);
      out.extra.emplace_back(absl::StrCat(key, "underflow_", kRoleNames[r]),
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
