#include "runtime/comm/log.h"

#include <spdlog/spdlog.h>

namespace kp::comm {

void LogError(const std::string& message) { spdlog::error("{}", message); }
void LogWarning(const std::string& message) { spdlog::warn("{}", message); }
void LogInfo(const std::string& message) { spdlog::info("{}", message); }

}  // namespace kp::comm
