#include "runtime/worker/fault/parent_death.h"

#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

namespace kp::worker::fault {
namespace {

// This process adopts orphans (subreaper), forks a "agent" child that forks
// a "worker" grandchild; the agent dies; the worker must get SIGTERM.
TEST(ParentDeath, WorkerGetsTheSignalWhenItsParentDies) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const pid_t agent = ::fork();
  ASSERT_GE(agent, 0);
  if (agent == 0) {
    const pid_t parent = ::getpid();
    const pid_t worker = ::fork();
    if (worker == 0) {
      if (!SignalWhenParentDies(SIGTERM, parent).ok()) ::_exit(3);
      const pid_t me = ::getpid();
      (void)!::write(pipefd[1], &me, sizeof(me));
      for (int i = 0; i < 1000; ++i) ::usleep(10'000);  // 10 s: killed long before
      ::_exit(4);
    }
    ::usleep(100'000);  // let the worker arm its death signal
    ::_exit(0);         // the agent dies
  }
  pid_t worker = 0;
  ASSERT_EQ(::read(pipefd[0], &worker, sizeof(worker)), static_cast<ssize_t>(sizeof(worker)));
  int status = 0;
  ASSERT_EQ(::waitpid(agent, &status, 0), agent);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(::waitpid(worker, &status, 0), worker);  // adopted by us
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
}

}  // namespace
}  // namespace kp::worker::fault
