// Logging for files that include ATen: torch ships its own fmt headers, which
// shadow the system fmt that spdlog is built against, so those files log
// through these two functions (compiled without torch on the include path).
#ifndef KP_RUNTIME_FP8_LOG_H_
#define KP_RUNTIME_FP8_LOG_H_

#include <string_view>

namespace kp::fp8 {

void LogInfo(std::string_view message);
void LogWarn(std::string_view message);

}  // namespace kp::fp8

#endif  // KP_RUNTIME_FP8_LOG_H_
