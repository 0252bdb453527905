#include "runtime/engine/log.h"

#include <spdlog/spdlog.h>

#include "runtime/common/logging.h"

namespace kp::engine {

void LogInfo(std::string_view message) { spdlog::info("{}", message); }
void LogWarning(std::string_view message) { spdlog::warn("{}", message); }
void LogError(std::string_view message) { spdlog::error("{}", message); }

void InitProcessLogging(const std::string& role, int rank) {
  LogOptions o;
  o.role = role;
  o.rank = rank;
  InitLogging(o);
}

}  // namespace kp::engine
