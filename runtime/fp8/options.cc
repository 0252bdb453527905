#include "runtime/fp8/options.h"

#include "absl/strings/str_cat.h"

namespace kp::fp8 {

const char* RecipeName(Fp8Recipe r) { return r == Fp8Recipe::kCurrent ? "current" : "delayed"; }

absl::StatusOr<Fp8Recipe> ParseRecipe(const std::string& name) {
  if (name == "current") return Fp8Recipe::kCurrent;
  if (name == "delayed") return Fp8Recipe::kDelayed;
  return absl::InvalidArgumentError(
      absl::StrCat("fp8.recipe: unknown recipe '", name, "' (expected 'current' or 'delayed')"));
}

absl::Status ValidateOptions(const Fp8Options& o) {
  if (o.amax_history_len < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("fp8.amax_history_len must be >= 1, got ", o.amax_history_len));
  }
  if (o.margin < -16 || o.margin > 16) {
    return absl::InvalidArgumentError(absl::StrCat("fp8.margin must be in [-16, 16], got ", o.margin));
  }
  if (o.tokens < 0) return absl::InvalidArgumentError(absl::StrCat("fp8.tokens must be >= 0, got ", o.tokens));
  if (o.autotune_iters < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("fp8.autotune_iters must be >= 1, got ", o.autotune_iters));
  }
  if (!(o.min_speedup > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("fp8.min_speedup must be > 0, got ", o.min_speedup));
  }
  return absl::OkStatus();
}

}  // namespace kp::fp8
