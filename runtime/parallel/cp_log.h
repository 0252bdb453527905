// Logging for translation units that include libtorch: torch ships its own
// fmt (v12) ahead of the system's on the include path, which breaks
// spdlog's headers (built on fmt 9). These functions live in a torch-free
// file and take finished strings.
#ifndef KP_RUNTIME_PARALLEL_CP_LOG_H_
#define KP_RUNTIME_PARALLEL_CP_LOG_H_

#include <string>

namespace kp::parallel {

void LogInfo(const std::string& message);
void LogWarning(const std::string& message);

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_CP_LOG_H_
