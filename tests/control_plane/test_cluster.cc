#include "tests/control_plane/test_cluster.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>

#include "runtime/agent/device_discovery.h"

namespace kp::testing {
namespace {

agent::SupervisorOptions SupOptions(const std::string& run_root, const std::string& checkpoint_root) {
  agent::SupervisorOptions o;
  o.checkpoint_root = checkpoint_root;
  o.worker_binary = Runfile("tests/control_plane/fake_worker.sh");
  o.run_root = run_root;
  o.stop_grace_micros = 2'000'000;
  return o;
}

agent::AgentOptions AgentOpts(const std::string& coordinator, const std::string& id, int slots) {
  agent::AgentOptions o;
  o.coordinator_address = coordinator;
  o.token = kToken;
  o.agent_id = id;
  o.hostname = "localhost";
  o.devices = agent::CpuSlots(slots);
  o.poll_interval_ms = 20;
  o.rpc_timeout_ms = 2000;
  return o;
}

}  // namespace

std::string TempDir(const std::string& name) {
  static std::atomic<int> counter{0};
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/" + name + "-" + std::to_string(::getpid()) + "-" +
                    std::to_string(counter++);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string Runfile(const std::string& path) { return std::filesystem::absolute(path).string(); }

TestAgent::TestAgent(const std::string& coordinator, const std::string& id, int slots, const std::string& run_root,
                     const std::string& checkpoint_root)
    : run_root_(run_root),
      supervisor_(&launcher_, &clock_, SupOptions(run_root, checkpoint_root)),
      agent_(AgentOpts(coordinator, id, slots), &supervisor_) {
  thread_ = std::thread([this] { agent_.Run(&stop_).IgnoreError(); });
}

TestAgent::~TestAgent() {
  stop_ = true;
  thread_.join();
}

v1::JobSpec FakeJob(const std::string& name, int dp, int steps, const std::string& extra_yaml) {
  v1::JobSpec s;
  s.set_name(name);
  s.set_config_yaml("model: {layers: 1}\n" + extra_yaml);
  s.set_dp(dp);
  s.set_cp(1);
  s.set_steps(steps);
  return s;
}

}  // namespace kp::testing
