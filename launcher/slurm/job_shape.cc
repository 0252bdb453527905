#include "launcher/slurm/job_shape.h"

#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "runtime/common/files.h"

namespace kp::launcher {
namespace {

absl::StatusOr<int64_t> ReadPositive(const YAML::Node& map, const char* key,
                                     const std::string& where) {
  YAML::Node node = map[key];
  if (!node) return 1;
  int64_t value = 0;
  try {
    value = node.as<int64_t>();
  } catch (const YAML::Exception&) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, key, ": '", node.Scalar(), "' is not an integer"));
  }
  if (value < 1) {
    return absl::InvalidArgumentError(absl::StrCat(where, key, ": ", value, " must be >= 1"));
  }
  return value;
}

}  // namespace

absl::StatusOr<JobShape> ParseJobShape(const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid YAML: ", e.what()));
  }
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": a job file must be a YAML map"));
  }
  JobShape shape;
  YAML::Node scope = root;
  std::string where = absl::StrCat(source, ": ");
  if (!root["dp"] && !root["cp"] && root["parallel"] && root["parallel"].IsMap()) {
    scope = root["parallel"];
    where = absl::StrCat(source, ": parallel.");
  }
  KP_ASSIGN_OR_RETURN(shape.dp, ReadPositive(scope, "dp", where));
  KP_ASSIGN_OR_RETURN(shape.cp, ReadPositive(scope, "cp", where));
  if (root["cpu_fallback"]) {
    try {
      shape.cpu_fallback = root["cpu_fallback"].as<bool>();
    } catch (const YAML::Exception&) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": cpu_fallback: not a boolean"));
    }
  }
  if (root["name"] && root["name"].IsScalar()) shape.name = root["name"].Scalar();
  return shape;
}

absl::StatusOr<JobShape> LoadJobShape(const std::string& path) {
  KP_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseJobShape(text, path);
}

}  // namespace kp::launcher
