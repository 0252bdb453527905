#include "runtime/fp8/layer_choice.h"

#include <cmath>
#include <limits>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kp::fp8 {

bool ShapeSupportsFp8(const LinearShape& s) {
  return s.tokens > 0 && s.in > 0 && s.out > 0 && s.tokens % 16 == 0 && s.in % 16 == 0 &&
         s.out % 16 == 0;
}

LayerChoice ChooseLayerPrecision(const LinearShape& shape, const Fp8Options& options,
                                 LayerTimer* timer) {
  LayerChoice c;
  const bool known_tokens = shape.tokens > 0;
  LinearShape check = shape;
  if (!known_tokens) check.tokens = 16;  // M is checked per call when unknown
  if (!ShapeSupportsFp8(check)) {
    c.reason = absl::StrCat("GEMM dims ", shape.tokens, "x", shape.in, "->", shape.out,
                            " are not all multiples of 16 (at::_scaled_mm needs that)");
    return c;
  }
  if (timer == nullptr || !known_tokens) {
    c.fp8 = true;
    c.reason = "not measured (fp8.tokens unset)";
    return c;
  }
  absl::StatusOr<LayerTiming> t = timer->Time(shape, options.autotune_iters);
  if (!t.ok()) {
    c.reason = absl::StrCat("timing failed, keeping BF16: ", t.status().message());
    return c;
  }
  c.measured = true;
  c.timing = *t;
  const double speedup = t->fp8_us > 0 ? t->bf16_us / t->fp8_us : 0.0;
  c.fp8 = speedup >= options.min_speedup;
  c.reason = absl::StrFormat("fwd+bwd BF16 %.1f us, FP8 %.1f us (%.2fx, need >= %.2fx)", t->bf16_us,
                             t->fp8_us, speedup, options.min_speedup);
  return c;
}

LayerChoice LayerChooser::Choose(const std::string& layer_name, const LinearShape& shape) {
  auto it = cache_.find(shape);
  if (it == cache_.end()) {
    LayerChoice c = ChooseLayerPrecision(shape, options_, timer_);
    if (c.measured) ++measurements_;
    it = cache_.emplace(shape, std::move(c)).first;
  }
  spdlog::info("fp8 layer {} [{} x {} -> {}]: {} ({})", layer_name, shape.tokens, shape.in, shape.out,
               it->second.fp8 ? "FP8" : "BF16", it->second.reason);
  return it->second;
}

absl::StatusOr<LayerTiming> AgreedLayerTimer::Time(const LinearShape& shape, int64_t iters) {
  absl::StatusOr<LayerTiming> mine = inner_->Time(shape, iters);
  std::vector<double> values = {0.0, std::numeric_limits<double>::infinity()};
  if (mine.ok()) values = {mine->bf16_us, mine->fp8_us};
  // Every rank joins the reduction, also one whose own timing failed.
  KP_RETURN_IF_ERROR(max_(values));
  if (!std::isfinite(values[1])) {
    return absl::UnavailableError(
        mine.ok() ? "another rank could not time this shape" : std::string(mine.status().message()));
  }
  return LayerTiming{values[0], values[1]};
}

}  // namespace kp::fp8
