// Starting and watching worker processes, as a seam: the agent's supervisor
// runs against ForkExecLauncher in production and FakeProcessLauncher in
// tests (no processes, exits on demand).
#ifndef KP_RUNTIME_AGENT_PROCESS_LAUNCHER_H_
#define KP_RUNTIME_AGENT_PROCESS_LAUNCHER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/common/status.h"

namespace kp::agent {

struct ProcessSpec {
  std::vector<std::string> argv;  // argv[0] is the program path
  std::vector<std::string> env;   // "KEY=VALUE", added to the agent's environment
  std::string cwd;                // empty = the agent's
  std::string stdout_path;        // appended to; empty = the agent's
  std::string stderr_path;
};

class ProcessLauncher {
 public:
  virtual ~ProcessLauncher() = default;
  // A handle for the other calls. Fails when the program cannot be executed.
  virtual absl::StatusOr<int64_t> Start(const ProcessSpec& spec) = 0;
  // The exit code once the process ended (128 + signal when killed by one),
  // nullopt while it runs. Reaps: after an exit is returned, Poll keeps
  // returning it.
  virtual std::optional<int> Poll(int64_t handle) = 0;
  // Sends `signal` to the process and everything it started.
  virtual void Signal(int64_t handle, int signal) = 0;
};

// fork + execve. Each worker leads its own process group so a signal reaches
// its children too; its signal mask and handlers are reset to defaults.
class ForkExecLauncher final : public ProcessLauncher {
 public:
  absl::StatusOr<int64_t> Start(const ProcessSpec& spec) override;
  std::optional<int> Poll(int64_t handle) override;
  void Signal(int64_t handle, int signal) override;

 private:
  std::vector<std::pair<int64_t, int>> exited_;  // reaped pid -> exit code
};

}  // namespace kp::agent

#endif  // KP_RUNTIME_AGENT_PROCESS_LAUNCHER_H_
