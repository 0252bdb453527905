// Logging setup: every process logs through spdlog with one format, naming
// the process role and rank so interleaved logs of many workers stay readable.
#ifndef KP_RUNTIME_COMMON_LOGGING_H_
#define KP_RUNTIME_COMMON_LOGGING_H_

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

namespace kp {

struct LogOptions {
  std::string role = "kp";   // "coordinator", "agent", "worker"...
  int rank = -1;             // shown when >= 0
  std::string level = "info";  // trace, debug, info, warn, error
  std::string file;          // also log here when set
};

// Builds a logger and makes it spdlog's default for this process. Call once
// from main(); libraries log through spdlog::info etc. and never configure.
std::shared_ptr<spdlog::logger> InitLogging(const LogOptions& options);

}  // namespace kp

#endif  // KP_RUNTIME_COMMON_LOGGING_H_
