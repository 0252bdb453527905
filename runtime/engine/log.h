// Logging for engine code that also sees libtorch's headers. libtorch ships
// its own fmt, which shadows the system fmt that spdlog was built with, so a
// file compiled with torch on its include path cannot include spdlog. These
// functions live in a file without torch and forward to spdlog.
#ifndef KP_RUNTIME_ENGINE_LOG_H_
#define KP_RUNTIME_ENGINE_LOG_H_

#include <string>
#include <string_view>

namespace kp::engine {

void LogInfo(std::string_view message);
void LogWarning(std::string_view message);
void LogError(std::string_view message);

// kp::InitLogging for a process whose main() sees torch's headers.
void InitProcessLogging(const std::string& role, int rank);

}  // namespace kp::engine

#endif  // KP_RUNTIME_ENGINE_LOG_H_
