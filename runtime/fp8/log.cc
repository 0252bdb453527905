#include "runtime/fp8/log.h"

#include <spdlog/spdlog.h>

namespace kp::fp8 {

void LogInfo(std::string_view message) { spdlog::info("{}", message); }
void LogWarn(std::string_view message) { spdlog::warn("{}", message); }

}  // namespace kp::fp8
