#include "runtime/fp8/options_yaml.h"

#include <set>

#include "absl/strings/str_cat.h"

namespace kp::fp8 {
namespace {

absl::Status Bad(const std::string& source, const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": fp8.", key, ": ", what));
}

template <typename T>
absl::Status Read(const YAML::Node& node, const std::string& key, const std::string& source,
                  const char* type_name, T* out) {
  if (!node[key]) return absl::OkStatus();
  try {
    *out = node[key].as<T>();
  } catch (const YAML::Exception&) {
    return Bad(source, key, absl::StrCat("expected ", type_name, ", got '", YAML::Dump(node[key]), "'"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ParsedFp8Config> ParseFp8Config(const YAML::Node& node, const std::string& source) {
  ParsedFp8Config c;
  if (!node || node.IsNull()) return c;
  if (!node.IsMap()) return absl::InvalidArgumentError(absl::StrCat(source, ": fp8: expected a mapping"));
  static const std::set<std::string> kKnown = {"recipe",         "amax_history_len", "margin",
                                               "allow_fallback", "fp8_lm_head",      "autotune",
                                               "autotune_iters", "min_speedup",      "fast_accum_forward"};
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (kKnown.count(key) == 0) return Bad(source, key, "unknown field");
  }
  Fp8Options& o = c.options;
  std::string recipe = RecipeName(o.recipe);
  KP_RETURN_IF_ERROR(Read(node, "recipe", source, "a string", &recipe));
  absl::StatusOr<Fp8Recipe> r = ParseRecipe(recipe);
  if (!r.ok()) return Bad(source, "recipe", std::string(r.status().message()));
  o.recipe = *r;
  KP_RETURN_IF_ERROR(Read(node, "amax_history_len", source, "an integer", &o.amax_history_len));
  KP_RETURN_IF_ERROR(Read(node, "margin", source, "an integer", &o.margin));
  KP_RETURN_IF_ERROR(Read(node, "allow_fallback", source, "true or false", &o.allow_fallback));
  KP_RETURN_IF_ERROR(Read(node, "fp8_lm_head", source, "true or false", &o.fp8_lm_head));
  KP_RETURN_IF_ERROR(Read(node, "autotune", source, "true or false", &c.autotune));
  KP_RETURN_IF_ERROR(Read(node, "autotune_iters", source, "an integer", &o.autotune_iters));
  KP_RETURN_IF_ERROR(Read(node, "min_speedup", source, "a number", &o.min_speedup));
  KP_RETURN_IF_ERROR(Read(node, "fast_accum_forward", source, "true or false", &o.fast_accum_forward));
  absl::Status st = ValidateOptions(o);
  if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", st.message()));
  return c;
}

}  // namespace kp::fp8
