#include "runtime/agent/process_launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace kp::agent {
namespace {

int OpenLog(const std::string& path) {
  if (path.empty()) return -1;
  return ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

}  // namespace

absl::StatusOr<int64_t> ForkExecLauncher::Start(const ProcessSpec& spec) {
  if (spec.argv.empty()) return absl::InvalidArgumentError("empty argv");
  // Everything the child needs is built before fork: after it, only
  // async-signal-safe calls are allowed (the agent has threads).
  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) env_storage.emplace_back(*e);
  for (const auto& kv : spec.env) {
    const std::string key = kv.substr(0, kv.find('=') + 1);
    for (auto& e : env_storage) {
      if (e.rfind(key, 0) == 0) e.clear();
    }
    env_storage.push_back(kv);
  }
  std::vector<char*> envp;
  for (auto& e : env_storage) {
    if (!e.empty()) envp.push_back(e.data());
  }
  envp.push_back(nullptr);
  const int out = OpenLog(spec.stdout_path);
  const int err = OpenLog(spec.stderr_path);
  if ((!spec.stdout_path.empty() && out < 0) || (!spec.stderr_path.empty() && err < 0)) {
    std::string why = std::strerror(errno);
    if (out >= 0) ::close(out);
    if (err >= 0) ::close(err);
    return absl::UnavailableError("cannot open worker log " + spec.stdout_path + ": " + why);
  }
  int status_pipe[2];
  if (::pipe2(status_pipe, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");

  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int s = 1; s < NSIG; ++s) ::signal(s, SIG_DFL);
    if (out >= 0) ::dup2(out, STDOUT_FILENO);
    if (err >= 0) ::dup2(err, STDERR_FILENO);
    if (!spec.cwd.empty() && ::chdir(spec.cwd.c_str()) != 0) {
      int e = errno;
      (void)!::write(status_pipe[1], &e, sizeof(e));
      ::_exit(127);
    }
    ::execve(argv[0], argv.data(), envp.data());
    int e = errno;
    (void)!::write(status_pipe[1], &e, sizeof(e));
    ::_exit(127);
  }
  ::close(status_pipe[1]);
  if (out >= 0) ::close(out);
  if (err >= 0) ::close(err);
  if (pid < 0) {
    ::close(status_pipe[0]);
    return absl::ResourceExhaustedError(std::string("fork: ") + std::strerror(errno));
  }
  // The pipe closes on a successful exec; an errno arrives when it failed.
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(status_pipe[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  ::close(status_pipe[0]);
  if (n == sizeof(child_errno)) {
    ::waitpid(pid, nullptr, 0);
    return absl::FailedPreconditionError("cannot execute " + spec.argv[0] + ": " + std::strerror(child_errno));
  }
  return static_cast<int64_t>(pid);
}

std::optional<int> ForkExecLauncher::Poll(int64_t handle) {
  for (const auto& [pid, code] : exited_) {
    if (pid == handle) return code;
  }
  int status = 0;
  pid_t r = ::waitpid(static_cast<pid_t>(handle), &status, WNOHANG);
  if (r == 0) return std::nullopt;
  int code = -1;
  if (r == static_cast<pid_t>(handle)) {
    if (WIFEXITED(status)) code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) code = 128 + WTERMSIG(status);
  }
  exited_.emplace_back(handle, code);
  // Kill what the worker left behind in its group (a data loader, a shell's child).
  ::kill(-static_cast<pid_t>(handle), SIGKILL);
  return code;
}

void ForkExecLauncher::Signal(int64_t handle, int signal) {
  for (const auto& [pid, code] : exited_) {
    if (pid == handle) return;  // reaped: the pid may belong to someone else now
  }
  ::kill(-static_cast<pid_t>(handle), signal);
}

}  // namespace kp::agent
