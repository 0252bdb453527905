#include "runtime/comm/multiprocess.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"

namespace kp::comm::testing {

std::vector<absl::Status> RunProcesses(int n, const std::function<absl::Status(int rank)>& fn,
                                       std::chrono::milliseconds deadline) {
  std::vector<pid_t> pids(n, -1);
  std::vector<int> fds(n, -1);
  for (int r = 0; r < n; ++r) {
    int p[2];
    KP_CHECK(::pipe(p) == 0);
    const pid_t pid = ::fork();
    KP_CHECK(pid >= 0);
    if (pid == 0) {
      ::close(p[0]);
      absl::Status s;
      try {
        s = fn(r);
      } catch (const std::exception& e) {
        s = absl::InternalError(absl::StrCat("exception: ", e.what()));
      }
      const std::string msg = s.ToString();
      ssize_t ignored = ::write(p[1], msg.data(), msg.size());
      (void)ignored;
      ::close(p[1]);
      ::_exit(s.ok() ? 0 : 1);
    }
    ::close(p[1]);
    pids[r] = pid;
    fds[r] = p[0];
  }
  std::vector<absl::Status> out(n);
  std::vector<bool> reaped(n, false);
  const auto end = std::chrono::steady_clock::now() + deadline;
  int left = n;
  while (left > 0) {
    for (int r = 0; r < n; ++r) {
      if (reaped[r]) continue;
      int st = 0;
      if (::waitpid(pids[r], &st, WNOHANG) != pids[r]) continue;
      reaped[r] = true;
      --left;
      std::string msg;
      char buf[4096];
      ssize_t got;
      while ((got = ::read(fds[r], buf, sizeof buf)) > 0) msg.append(buf, got);
      ::close(fds[r]);
      if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        out[r] = absl::OkStatus();
      } else if (WIFEXITED(st) && WEXITSTATUS(st) == 1 && !msg.empty()) {
        out[r] = absl::InternalError(absl::StrCat("rank ", r, ": ", msg));
      } else {
        out[r] = absl::InternalError(absl::StrCat("rank ", r, " died: wait status ", st, " ", msg));
      }
    }
    if (left == 0) break;
    if (std::chrono::steady_clock::now() > end) {
      for (int r = 0; r < n; ++r) {
        if (reaped[r]) continue;
        ::kill(pids[r], SIGKILL);
        ::waitpid(pids[r], nullptr, 0);
        ::close(fds[r]);
        out[r] = absl::DeadlineExceededError(absl::StrCat("rank ", r, " hung: killed after ",
                                                          deadline.count(), " ms"));
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return out;
}

std::string FreshDir(const std::string& name) {
  static std::atomic<int> counter{0};
  const char* t = std::getenv("TEST_TMPDIR");
  return absl::StrCat(t ? t : "/tmp", "/", name, "_", ::getpid(), "_", counter++);
}

}  // namespace kp::comm::testing
