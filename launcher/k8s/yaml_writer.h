// Writes a JSON value as block-style YAML for people to read and
// `kubectl apply`. Every string is double-quoted (JSON escaping is valid
// YAML), so "0", "true" or "1.10" never turn into numbers or booleans;
// multi-line strings become literal blocks (`|`) so an embedded job file
// stays readable.
#ifndef KP_LAUNCHER_K8S_YAML_WRITER_H_
#define KP_LAUNCHER_K8S_YAML_WRITER_H_

#include <string>

#include <nlohmann/json.hpp>

namespace kp::launcher {

std::string ToYaml(const nlohmann::ordered_json& value);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_K8S_YAML_WRITER_H_
