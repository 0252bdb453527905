#include "runtime/coordinator/spec_validation.h"

#include <cstdint>

#include "runtime/common/files.h"

namespace kp::coordinator {
namespace {

absl::Status Invalid(const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError("spec." + field + ": " + why);
}

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

// A relative (or absolute-under-root) path that must stay inside `root`.
absl::Status CheckPath(const std::string& field, const std::string& path, const std::string& root,
                       const std::string& root_flag) {
  if (path.empty()) return absl::OkStatus();
  if (path.size() > 4096) return Invalid(field, "longer than 4096 bytes");
  if (path.find('\0') != std::string::npos) return Invalid(field, "contains a NUL byte");
  if (root.empty()) return Invalid(field, "paths are refused: the coordinator has no " + root_flag);
  auto resolved = ResolveUnderRoot(root, path);
  if (!resolved.ok()) {
    if (absl::IsPermissionDenied(resolved.status())) {
      return absl::PermissionDeniedError("spec." + field + ": \"" + path + "\" escapes " + root_flag + " " + root);
    }
    return Invalid(field, std::string(resolved.status().message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateJobSpec(const v1::JobSpec& spec, const SpecRoots& roots) {
  const std::string& name = spec.name();
  if (name.empty() || name.size() > 64) return Invalid("name", "must be 1 to 64 characters");
  for (char c : name) {
    if (!IsNameChar(c)) return Invalid("name", "only letters, digits, '.', '_' and '-' are allowed");
  }
  if (name == "." || name == "..") return Invalid("name", "must not be . or ..");

  switch (spec.model_config_case()) {
    case v1::JobSpec::kConfigYaml:
      if (spec.config_yaml().empty()) return Invalid("config_yaml", "is empty");
      if (spec.config_yaml().size() > kMaxConfigYamlBytes) return Invalid("config_yaml", "larger than 1 MiB");
      break;
    case v1::JobSpec::kConfigPath:
      if (spec.config_path().empty()) return Invalid("config_path", "is empty");
      KP_RETURN_IF_ERROR(CheckPath("config_path", spec.config_path(), roots.config_root, "--config_root"));
      break;
    default:
      return Invalid("config_yaml", "one of config_yaml or config_path is required");
  }
  KP_RETURN_IF_ERROR(CheckPath("data_path", spec.data_path(), roots.data_root, "--data_root"));

  if (spec.dp() < 1) return Invalid("dp", "must be >= 1 (got " + std::to_string(spec.dp()) + ")");
  if (spec.cp() < 1) return Invalid("cp", "must be >= 1 (got " + std::to_string(spec.cp()) + ")");
  if (static_cast<int64_t>(spec.dp()) * spec.cp() > kMaxWorldSize) {
    return Invalid("dp", "dp * cp exceeds " + std::to_string(kMaxWorldSize));
  }
  if (!v1::CpMode_IsValid(spec.cp_mode())) return Invalid("cp_mode", "unknown value");
  if (!v1::Precision_IsValid(spec.precision())) return Invalid("precision", "unknown value");
  if (spec.steps() < 1 || spec.steps() > 1'000'000'000) return Invalid("steps", "must be in [1, 1e9]");

  const auto& ckpt = spec.checkpoint();
  KP_RETURN_IF_ERROR(CheckPath("checkpoint.dir", ckpt.dir(), roots.checkpoint_root, "--checkpoint_root"));
  if (ckpt.every_steps() < 0) return Invalid("checkpoint.every_steps", "must be >= 0");
  if (ckpt.keep_last() < 0) return Invalid("checkpoint.keep_last", "must be >= 0");
  if (ckpt.resume() && ckpt.dir().empty()) return Invalid("checkpoint.resume", "needs checkpoint.dir");

  if (spec.priority() < -1000 || spec.priority() > 1000) return Invalid("priority", "must be in [-1000, 1000]");
  if (spec.max_restarts() < 0 || spec.max_restarts() > 100) return Invalid("max_restarts", "must be in [0, 100]");
  if (spec.max_restarts() > 0 && !spec.elastic()) return Invalid("max_restarts", "needs elastic: true");
  if (spec.min_dp() != 0) {
    if (spec.min_dp() < 1 || spec.min_dp() > spec.dp()) {
      return Invalid("min_dp", "must be in [1, dp = " + std::to_string(spec.dp()) + "] (got " +
                                   std::to_string(spec.min_dp()) + "; 0 = unset)");
    }
    if (!spec.elastic()) return Invalid("min_dp", "needs elastic: true (only an elastic job shrinks)");
  }

  if (spec.in_process_shrink()) {
    if (!spec.elastic()) return Invalid("in_process_shrink", "needs elastic: true");
    if (spec.dp() < 2) return Invalid("in_process_shrink", "needs dp >= 2 (got " + std::to_string(spec.dp()) + ")");
    if (spec.cp() != 1) return Invalid("in_process_shrink", "needs cp == 1 (got " + std::to_string(spec.cp()) + ")");
  }

  if (spec.labels_size() > 16) return Invalid("labels", "at most 16");
  for (const auto& [k, v] : spec.labels()) {
    if (k.empty() || k.size() > 64) return Invalid("labels", "keys must be 1 to 64 bytes");
    if (v.size() > 64) return Invalid("labels[" + k + "]", "values must be at most 64 bytes");
  }
  return absl::OkStatus();
}

}  // namespace kp::coordinator
