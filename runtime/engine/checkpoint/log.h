// Logging for code that includes ATen: libtorch's include directory carries
// its own fmt (v12), which shadows the system fmt that spdlog was built with,
// so spdlog's headers do not compile beside ATen's. These wrappers live in a
// target without torch's include path.
#ifndef KP_RUNTIME_ENGINE_CHECKPOINT_LOG_H_
#define KP_RUNTIME_ENGINE_CHECKPOINT_LOG_H_

#include <string_view>

namespace kp::ckpt::log {

void Info(std::string_view message);
void Warn(std::string_view message);
void Error(std::string_view message);

}  // namespace kp::ckpt::log

#endif  // KP_RUNTIME_ENGINE_CHECKPOINT_LOG_H_
