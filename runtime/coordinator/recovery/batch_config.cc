#include "runtime/coordinator/recovery/batch_config.h"

#include <yaml-cpp/yaml.h>

#include <optional>

namespace kp::coordinator::recovery {
namespace {

absl::StatusOr<YAML::Node> Parse(const std::string& text) {
  try {
    YAML::Node root = YAML::Load(text);
    if (!root.IsMap()) return absl::InvalidArgumentError("config_yaml: not a mapping");
    return root;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(std::string("config_yaml: ") + e.what());
  }
}

absl::StatusOr<int64_t> PositiveInt(const YAML::Node& training, const char* key, std::optional<int64_t> dflt) {
  const std::string field = std::string("config_yaml: training.") + key;
  if (!training || !training[key]) {
    if (dflt) return *dflt;
    return absl::InvalidArgumentError(field + " is missing");
  }
  try {
    int64_t v = training[key].as<int64_t>();
    if (v < 1) return absl::InvalidArgumentError(field + " must be >= 1, is " + std::to_string(v));
    return v;
  } catch (const YAML::Exception&) {
    return absl::InvalidArgumentError(field + " is not an integer");
  }
}

}  // namespace

absl::StatusOr<BatchShape> ReadBatchShape(const std::string& config_yaml) {
  KP_ASSIGN_OR_RETURN(YAML::Node root, Parse(config_yaml));
  YAML::Node training = root["training"];
  BatchShape b;
  KP_ASSIGN_OR_RETURN(b.micro_batch, PositiveInt(training, "micro_batch", std::nullopt));
  KP_ASSIGN_OR_RETURN(b.grad_accum, PositiveInt(training, "grad_accum", 1));
  return b;
}

absl::StatusOr<std::string> RewriteForLayout(const std::string& config_yaml, int dp, const BatchShape& batch) {
  if (dp < 1 || batch.micro_batch < 1 || batch.grad_accum < 1) {
    return absl::InvalidArgumentError("RewriteForLayout: dp, micro_batch and grad_accum must be >= 1");
  }
  KP_ASSIGN_OR_RETURN(YAML::Node root, Parse(config_yaml));
  root["parallel"]["dp"] = dp;
  root["training"]["micro_batch"] = batch.micro_batch;
  root["training"]["grad_accum"] = batch.grad_accum;
  YAML::Emitter out;
  out << root;
  if (!out.good()) return absl::InternalError(std::string("config_yaml: cannot emit: ") + out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

}  // namespace kp::coordinator::recovery
