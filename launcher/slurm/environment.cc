#include "launcher/slurm/environment.h"

#include <charconv>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace kp::launcher {

EnvLookup ProcessEnvironment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

EnvLookup MapEnvironment(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

std::map<std::string, std::string> ParseEnvText(std::string_view text) {
  std::map<std::string, std::string> vars;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    size_t eq = line.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    vars[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
  }
  return vars;
}

absl::StatusOr<int64_t> EnvInt(const EnvLookup& env, const std::string& name,
                               std::optional<int64_t> fallback, int64_t min) {
  std::optional<std::string> value = env(name);
  if (!value.has_value() || value->empty()) {
    if (fallback.has_value()) return *fallback;
    return absl::NotFoundError(absl::StrCat(name, " is not set"));
  }
  int64_t parsed = 0;
  const char* begin = value->data();
  const char* end = begin + value->size();
  auto [ptr, ec] = std::from_chars(begin, end, parsed);
  if (ec != std::errc() || ptr != end) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, "='", *value, "' is not an integer"));
  }
  if (parsed < min) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, "=", parsed, " is below the minimum ", min));
  }
  return parsed;
}

}  // namespace kp::launcher
