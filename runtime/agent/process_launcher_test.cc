#include "runtime/agent/process_launcher.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

namespace kp::agent {
namespace {

std::string TempPath(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return std::string(tmp != nullptr ? tmp : "/tmp") + "/" + name + std::to_string(::getpid());
}

int WaitExit(ForkExecLauncher& l, int64_t h) {
  for (int i = 0; i < 500; ++i) {
    if (auto code = l.Poll(h)) return *code;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1000;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ForkExecLauncher, RunsWithEnvCwdAndLogs) {
  ForkExecLauncher l;
  ProcessSpec spec;
  spec.argv = {"/bin/sh", "-c", "echo out:$KP_X; echo err >&2; pwd; exit 3"};
  spec.env = {"KP_X=hello"};
  spec.cwd = "/";
  spec.stdout_path = TempPath("out");
  spec.stderr_path = TempPath("err");
  std::remove(spec.stdout_path.c_str());
  auto h = l.Start(spec);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(WaitExit(l, *h), 3);
  EXPECT_EQ(l.Poll(*h), 3);  // stays reaped
  EXPECT_EQ(Slurp(spec.stdout_path), "out:hello\n/\n");
  EXPECT_EQ(Slurp(spec.stderr_path), "err\n");
}

TEST(ForkExecLauncher, MissingProgramFailsToStart) {
  ForkExecLauncher l;
  ProcessSpec spec;
  spec.argv = {"/nonexistent/kp-train"};
  auto h = l.Start(spec);
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("/nonexistent/kp-train"), std::string::npos);
}

TEST(ForkExecLauncher, SigtermReachesTheWorkerEvenIfTheAgentBlocksIt) {
  // The agent blocks SIGTERM for sigwait; the child must not inherit that.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ForkExecLauncher l;
  ProcessSpec spec;
  spec.argv = {"/bin/sleep", "30"};
  auto h = l.Start(spec);
  ASSERT_TRUE(h.ok());
  EXPECT_FALSE(l.Poll(*h).has_value());
  l.Signal(*h, SIGTERM);
  EXPECT_EQ(WaitExit(l, *h), 128 + SIGTERM);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

TEST(ForkExecLauncher, SigkillEndsAWorkerThatIgnoresSigterm) {
  ForkExecLauncher l;
  ProcessSpec spec;
  spec.argv = {"/bin/sh", "-c", "trap '' TERM; sleep 30 & wait; sleep 30"};
  auto h = l.Start(spec);
  ASSERT_TRUE(h.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  l.Signal(*h, SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(l.Poll(*h).has_value());
  l.Signal(*h, SIGKILL);
  EXPECT_EQ(WaitExit(l, *h), 128 + SIGKILL);
}

}  // namespace
}  // namespace kp::agent
