// Daemons on loopback for the integration tests: in-process agents that run
// real worker processes (fork/exec of fake_worker.sh), against either an
// in-process coordinator or a kp-coordinator child process.
#ifndef KP_TESTS_CONTROL_PLANE_TEST_CLUSTER_H_
#define KP_TESTS_CONTROL_PLANE_TEST_CLUSTER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "launcher/client.h"
#include "runtime/agent/agent.h"
#include "runtime/agent/process_launcher.h"
#include "runtime/agent/supervisor.h"
#include "runtime/common/clock.h"

namespace kp::testing {

inline constexpr char kToken[] = "integration-token";

// TEST_TMPDIR (or /tmp) + a unique suffix.
std::string TempDir(const std::string& name);
// The runfiles path of a data dependency, made absolute.
std::string Runfile(const std::string& path);

// One kp-agent, in-process, with `slots` CPU devices.
class TestAgent {
 public:
  TestAgent(const std::string& coordinator, const std::string& id, int slots, const std::string& run_root,
            const std::string& checkpoint_root = "");
  ~TestAgent();
  int live_workers() const { return supervisor_.live_workers(); }
  const std::string& run_root() const { return run_root_; }

 private:
  std::string run_root_;
  RealClock clock_;
  agent::ForkExecLauncher launcher_;
  agent::Supervisor supervisor_;
  agent::Agent agent_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

v1::JobSpec FakeJob(const std::string& name, int dp, int steps, const std::string& extra_yaml = "");

}  // namespace kp::testing

#endif  // KP_TESTS_CONTROL_PLANE_TEST_CLUSTER_H_
