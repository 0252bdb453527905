#include "runtime/parallel/cp_log.h"

#include <spdlog/spdlog.h>

namespace kp::parallel {

void LogInfo(const std::string& message) { spdlog::info("{}", message); }
void LogWarning(const std::string& message) { spdlog::warn("{}", message); }

}  // namespace kp::parallel
