// Logging for code that sees torch headers: libtorch ships its own fmt (v12),
// which shadows the system fmt that Debian's spdlog was built against, so
// spdlog cannot be included next to ATen. These go through a file that
// includes spdlog without torch on its include path.
#ifndef KP_RUNTIME_COMM_LOG_H_
#define KP_RUNTIME_COMM_LOG_H_

#include <string>

namespace kp::comm {

void LogError(const std::string& message);
void LogWarning(const std::string& message);
void LogInfo(const std::string& message);

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_LOG_H_
