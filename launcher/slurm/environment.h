// Where a launcher reads its environment from. Slurm, MPI and Kubernetes all
// describe a task through environment variables; reading them through this
// seam lets tests feed a table (or another process's real `env` output)
// instead of mutating the test's own environment.
#ifndef KP_LAUNCHER_SLURM_ENVIRONMENT_H_
#define KP_LAUNCHER_SLURM_ENVIRONMENT_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "runtime/common/status.h"

namespace kp::launcher {

// Returns the variable's value, or nullopt when it is unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// The process environment (getenv).
EnvLookup ProcessEnvironment();

// A fixed table; the map is copied.
EnvLookup MapEnvironment(std::map<std::string, std::string> vars);

// Parses `env`-style text (NAME=VALUE per line) into a table.
std::map<std::string, std::string> ParseEnvText(std::string_view text);

// Reads an integer variable. Unset: `fallback` when given, else NOT_FOUND
// naming the variable. Not an integer, or below `min`: INVALID_ARGUMENT
// naming the variable and its value.
absl::StatusOr<int64_t> EnvInt(const EnvLookup& env, const std::string& name,
                               std::optional<int64_t> fallback = std::nullopt, int64_t min = 0);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_SLURM_ENVIRONMENT_H_
