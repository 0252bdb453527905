#include "runtime/engine/checkpoint/log.h"

#include <spdlog/spdlog.h>

namespace kp::ckpt::log {

void Info(std::string_view message) { spdlog::info("{}", message); }
void Warn(std::string_view message) { spdlog::warn("{}", message); }
void Error(std::string_view message) { spdlog::error("{}", message); }

}  // namespace kp::ckpt::log
