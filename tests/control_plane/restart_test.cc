// kp-coordinator (the real binary, SQLite state) SIGKILLed twice: once with
// jobs queued, once with a job running. Every job must still be there after
// each restart, and all of them must complete; the running worker keeps
// running through the outage (same generation) because its agent just
// retries heartbeats.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "runtime/agent/process_launcher.h"
#include "tests/control_plane/test_cluster.h"

namespace kp::testing {
namespace {

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

class CoordinatorProcess {
 public:
  CoordinatorProcess(std::string dir, int port) : dir_(std::move(dir)), port_(port) {
    std::ofstream(dir_ + "/token") << kToken << "\n";
  }
  ~CoordinatorProcess() { Kill(SIGTERM); }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  void Start() {
    agent::ProcessSpec spec;
    spec.argv = {Runfile("runtime/coordinator/kp-coordinator"), "--listen", address(), "--db", dir_ + "/state.db",
                 "--token_file", dir_ + "/token", "--metrics_port", "-1", "--heartbeat_interval_ms", "200",
                 "--heartbeat_timeout_ms", "10000"};
    spec.stdout_path = dir_ + "/coordinator.log";
    spec.stderr_path = dir_ + "/coordinator.log";
    auto h = launcher_.Start(spec);
    ASSERT_TRUE(h.ok()) << h.status();
    handle_ = *h;
    auto client = *launcher::CoordinatorClient::Connect({address(), kToken, "", 1000, /*wait_for_ready=*/true});
    for (int i = 0; i < 200; ++i) {
      if (client->List().ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL() << "kp-coordinator did not come up; see " << dir_ << "/coordinator.log";
  }

  void Kill(int sig) {
    if (handle_ < 0) return;
    launcher_.Signal(handle_, sig);
    for (int i = 0; i < 200 && !launcher_.Poll(handle_); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    handle_ = -1;
  }

 private:
  std::string dir_;
  int port_;
  agent::ForkExecLauncher launcher_;
  int64_t handle_ = -1;
};

TEST(CoordinatorRestart, SigkillLosesNoJobAndRunningWorkersContinue) {
  const std::string dir = TempDir("restart");
  CoordinatorProcess coordinator(dir, FreePort());
  coordinator.Start();
  auto client = *launcher::CoordinatorClient::Connect({coordinator.address(), kToken, "", 5000, true});

  // Phase 1: three jobs queued (no agent yet), then SIGKILL.
  std::vector<std::string> ids;
  ids.push_back(client->Submit(FakeJob("long", 1, 25, "fake_step_seconds: 0.1\n"))->job_id());
  ids.push_back(client->Submit(FakeJob("second", 1, 3))->job_id());
  ids.push_back(client->Submit(FakeJob("third", 1, 3))->job_id());
  coordinator.Kill(SIGKILL);
  coordinator.Start();
  auto jobs = client->List();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 3u);
  for (const auto& j : *jobs) EXPECT_EQ(j.state(), v1::JOB_STATE_QUEUED) << j.job_id();

  // Phase 2: an agent runs them one at a time; SIGKILL while the first runs.
  TestAgent agent(coordinator.address(), "node-a", 1, TempDir("runs"));
  for (int i = 0; i < 200 && client->Get(ids[0])->state() != v1::JOB_STATE_RUNNING; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ASSERT_EQ(client->Get(ids[0])->state(), v1::JOB_STATE_RUNNING);
  coordinator.Kill(SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(agent.live_workers(), 1);  // the worker does not notice the outage
  coordinator.Start();
  EXPECT_EQ(client->Get(ids[0])->state(), v1::JOB_STATE_RUNNING);

  for (const auto& id : ids) {
    auto final = client->Watch(id, [](const v1::JobEvent&) {});
    ASSERT_TRUE(final.ok()) << final.status();
    EXPECT_EQ(final->state(), v1::JOB_STATE_COMPLETED) << id << ": " << final->message();
    EXPECT_EQ(final->generation(), 1) << id << " was restarted";
  }
}

}  // namespace
}  // namespace kp::testing
