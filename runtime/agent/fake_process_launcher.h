// A ProcessLauncher without processes: tests decide when a "process" exits
// and see which signals it got.
#ifndef KP_RUNTIME_AGENT_FAKE_PROCESS_LAUNCHER_H_
#define KP_RUNTIME_AGENT_FAKE_PROCESS_LAUNCHER_H_

#include <map>
#include <mutex>

#include "runtime/agent/process_launcher.h"

namespace kp::agent {

class FakeProcessLauncher final : public ProcessLauncher {
 public:
  struct Process {
    ProcessSpec spec;
    std::optional<int> exit_code;
    std::vector<int> signals;
    // When set, SIGTERM ends the process with 128 + 15.
    bool exits_on_sigterm = true;
  };

  absl::StatusOr<int64_t> Start(const ProcessSpec& spec) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (fail_next_start_) {
      fail_next_start_ = false;
      return absl::FailedPreconditionError("cannot execute " + spec.argv[0]);
    }
    const int64_t h = next_++;
    procs_[h].spec = spec;
    procs_[h].exits_on_sigterm = exits_on_sigterm_;
    return h;
  }
  std::optional<int> Poll(int64_t handle) override {
    std::lock_guard<std::mutex> lock(mu_);
    return procs_.at(handle).exit_code;
  }
  void Signal(int64_t handle, int signal) override {
    std::lock_guard<std::mutex> lock(mu_);
    Process& p = procs_.at(handle);
    p.signals.push_back(signal);
    if (p.exit_code) return;
    if (signal == 9 || (signal == 15 && p.exits_on_sigterm)) p.exit_code = 128 + signal;
  }

  void Exit(int64_t handle, int code) {
    std::lock_guard<std::mutex> lock(mu_);
    procs_.at(handle).exit_code = code;
  }
  Process Get(int64_t handle) {
    std::lock_guard<std::mutex> lock(mu_);
    return procs_.at(handle);
  }
  size_t started() {
    std::lock_guard<std::mutex> lock(mu_);
    return procs_.size();
  }
  void set_exits_on_sigterm(bool v) { exits_on_sigterm_ = v; }
  void FailNextStart() { fail_next_start_ = true; }

 private:
  std::mutex mu_;
  std::map<int64_t, Process> procs_;
  int64_t next_ = 1;
  bool exits_on_sigterm_ = true;
  bool fail_next_start_ = false;
};

}  // namespace kp::agent

#endif  // KP_RUNTIME_AGENT_FAKE_PROCESS_LAUNCHER_H_
