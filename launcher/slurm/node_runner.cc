#include "launcher/slurm/node_runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "launcher/client.h"
#include "launcher/progress.h"
#include "runtime/agent/agent.h"
#include "runtime/agent/process_launcher.h"
#include "runtime/agent/supervisor.h"
#include "runtime/common/clock.h"
#include "runtime/common/files.h"
#include "runtime/coordinator/coordinator.h"
#include "runtime/coordinator/rpc.h"
#include "runtime/coordinator/server.h"
#include "runtime/coordinator/spec_validation.h"
#include "runtime/coordinator/state_store.h"

namespace kp::launcher {
namespace {

constexpr int64_t kPollMs = 250;

std::string Absolute(const std::string& p) {
  std::error_code ec;
  return std::filesystem::absolute(p, ec).lexically_normal().string();
}

absl::StatusOr<std::string> RandomToken() {
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::UnavailableError("cannot open /dev/urandom");
  unsigned char raw[24];
  ssize_t n = ::read(fd, raw, sizeof(raw));
  ::close(fd);
  if (n != static_cast<ssize_t>(sizeof(raw))) return absl::UnavailableError("short read from /dev/urandom");
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Signals arrive at a thread that only records them; the main flow checks.
class SignalWatcher {
 public:
  SignalWatcher() {
    thread_ = std::thread([this] {
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGINT);
      sigaddset(&set, SIGTERM);
      while (!done_.load()) {
        timespec ts{0, 100'000'000};
        int sig = sigtimedwait(&set, nullptr, &ts);
        if (sig > 0) signal_.store(sig);
      }
    });
  }
  ~SignalWatcher() {
    done_ = true;
    thread_.join();
  }
  int signal() const { return signal_.load(); }

 private:
  std::atomic<bool> done_{false};
  std::atomic<int> signal_{0};
  std::thread thread_;
};

// The token: a given file, or one the coordinator node creates on a shared
// path for the others to read.
absl::StatusOr<std::string> ObtainToken(const NodeRole& role, const SignalWatcher& signals) {
  if (!role.token_file.empty()) return rpc::ReadTokenFile(role.token_file);
  if (role.shared_token_path.empty()) {
    return absl::InvalidArgumentError("no --token_file and no shared path for a generated token");
  }
  if (role.start_coordinator) {
    KP_RETURN_IF_ERROR(MakeDirs(std::filesystem::path(role.shared_token_path).parent_path().string()));
    ::chmod(std::filesystem::path(role.shared_token_path).parent_path().c_str(), 0700);
    KP_ASSIGN_OR_RETURN(std::string token, RandomToken());
    const std::string tmp = role.shared_token_path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return absl::PermissionDeniedError("cannot create " + tmp);
    bool ok = ::write(fd, token.data(), token.size()) == static_cast<ssize_t>(token.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) return absl::InternalError("cannot write " + tmp);
    KP_RETURN_IF_ERROR(CommitFile(tmp, role.shared_token_path));
    return token;
  }
  const int64_t deadline = NowMs() + role.register_timeout_ms;
  while (true) {
    auto token = rpc::ReadTokenFile(role.shared_token_path);
    if (token.ok()) return token;
    if (signals.signal() != 0) return absl::CancelledError("interrupted while waiting for the token");
    if (NowMs() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "the coordinator node did not write the job's token to ", role.shared_token_path, " within ",
          role.register_timeout_ms / 1000,
          " s: --run_root must lie on a filesystem every node shares (or pass --token_file); check node 0's log"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
  }
}

bool Terminal(v1::JobState s) {
  return s == v1::JOB_STATE_COMPLETED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

std::string LaunchLabelValue(const NodeRole& role) { return absl::StrCat(role.launcher, "-", role.job_key); }

// Finds this launch's newest job on the coordinator.
absl::StatusOr<std::optional<v1::JobStatus>> FindJob(CoordinatorClient& client, const NodeRole& role) {
  KP_ASSIGN_OR_RETURN(auto jobs, client.List());
  std::optional<v1::JobStatus> found;
  const std::string want = LaunchLabelValue(role);
  for (const auto& j : jobs) {
    auto it = j.spec().labels().find(kLaunchLabel);
    if (it == j.spec().labels().end() || it->second != want) continue;
    if (!found.has_value() || j.sequence() > found->sequence()) found = j;
  }
  return found;
}

absl::Status WaitForAgents(CoordinatorClient& client, const NodeRole& role, const SignalWatcher& signals) {
  std::set<std::string> expected;
  for (int i = 0; i < role.num_nodes; ++i) expected.insert(AgentIdFor(role, i));
  const int64_t deadline = NowMs() + role.register_timeout_ms;
  std::string last_error;
  while (true) {
    auto agents = client.ListAgents();
    std::set<std::string> missing = expected;
    if (agents.ok()) {
      for (const auto& a : *agents) {
        if (a.state() == v1::AGENT_STATE_ALIVE) missing.erase(a.info().agent_id());
      }
      if (missing.empty()) return absl::OkStatus();
    } else {
      last_error = std::string(agents.status().message());
    }
    if (signals.signal() != 0) return absl::CancelledError("interrupted while waiting for agents");
    if (NowMs() > deadline) {
      if (!agents.ok()) {
        return absl::DeadlineExceededError(absl::StrCat("the coordinator at ", role.coordinator_target,
                                                        " did not answer within ", role.register_timeout_ms / 1000,
                                                        " s (", last_error, ")"));
      }
      return absl::DeadlineExceededError(absl::StrCat(
          "agent(s) ", absl::StrJoin(missing, ", "), " did not register with ", role.coordinator_target, " within ",
          role.register_timeout_ms / 1000,
          " s: check those nodes' output, and that they reach the coordinator's address and port"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
  }
}

// An embedded coordinator starts with no state, so its job ids restart at
// j000001 and a requeued job gets its old run directory back: wanted, since
// the worker resumes from the checkpoints there. The Gloo rendezvous files of
// the old run are not: they would send the new workers to dead addresses.
// No worker of this launch exists yet (nothing is submitted), so every
// rendezvous directory of a run of this job name is stale.
void ClearStaleRendezvous(const std::string& run_root, const std::string& name, const std::string& prefix) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(run_root, ec)) {
    const std::string dir = entry.path().filename().string();
    if (dir.rfind(name + "-j", 0) != 0) continue;
    const auto rendezvous = entry.path() / "rendezvous";
    if (!std::filesystem::exists(rendezvous, ec)) continue;
    std::filesystem::remove_all(rendezvous, ec);
    if (ec) {
      spdlog::warn("{}: cannot clear stale rendezvous {}: {}", prefix, rendezvous.string(), ec.message());
    } else {
      spdlog::info("{}: cleared stale rendezvous files {}", prefix, rendezvous.string());
    }
  }
}

}  // namespace

std::string AgentIdFor(const NodeRole& role, int index) {
  return absl::StrCat(role.launcher, "-", role.job_key, "-node", index);
}

absl::StatusOr<int> RunClusterNode(const LaunchOptions& o, const NodeRole& role) {
  const std::string prefix = absl::StrCat("kprun ", role.launcher);
  const std::string worker = o.worker_binary.empty() ? DefaultWorkerBinary() : Absolute(o.worker_binary);
  if (worker.empty() || ::access(worker.c_str(), X_OK) != 0) {
    return absl::InvalidArgumentError("worker binary " + (worker.empty() ? std::string("kp-train") : worker) +
                                      " not found or not executable; pass --worker_binary");
  }
  if (role.devices.empty()) return absl::InvalidArgumentError("this node offers no devices");
  const std::string run_root = Absolute(o.run_root);
  coordinator::SpecRoots roots;
  roots.config_root = Absolute(o.config_root.empty() ? "." : o.config_root);
  roots.data_root = Absolute(o.data_root.empty() ? "." : o.data_root);
  roots.checkpoint_root = Absolute(o.checkpoint_root.empty() ? run_root + "/checkpoints" : o.checkpoint_root);
  KP_RETURN_IF_ERROR(MakeDirs(roots.checkpoint_root));
  v1::JobSpec spec = o.spec;
  if (role.resume) {
    if (spec.checkpoint().dir().empty()) {
      std::fprintf(stderr, "%s: asked to resume, but the job has no checkpoint.dir: starting from step 0\n",
                   prefix.c_str());
    } else {
      spec.mutable_checkpoint()->set_resume(true);
    }
  }
  (*spec.mutable_labels())[kLaunchLabel] = LaunchLabelValue(role);
  KP_RETURN_IF_ERROR(coordinator::ValidateJobSpec(spec, roots));

  SignalWatcher signals;
  KP_ASSIGN_OR_RETURN(std::string token, ObtainToken(role, signals));
  std::string token_file = role.token_file.empty() ? role.shared_token_path : role.token_file;

  RealClock clock;
  std::unique_ptr<coordinator::StateStore> store;
  std::unique_ptr<coordinator::Coordinator> coord;
  std::unique_ptr<coordinator::CoordinatorServer> server;
  if (role.start_coordinator) {
    store = coordinator::NewMemoryStateStore();
    coordinator::CoordinatorOptions copts;
    copts.roots = roots;
    copts.heartbeat_interval_ms = 500;
    copts.advertised_address = role.coordinator_target;
    KP_ASSIGN_OR_RETURN(coord, coordinator::Coordinator::Create(store.get(), &clock, copts));
    coordinator::ServerOptions sopts;
    sopts.listen_address = role.listen_address;
    sopts.token = token;
    auto started = coordinator::CoordinatorServer::Start(coord.get(), sopts);
    if (!started.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "cannot start the coordinator on ", role.listen_address, " (", started.status().message(),
          "): is the port taken by another job? pass --port-base"));
    }
    server = *std::move(started);
    std::printf("%s: coordinator listening on %s (reached as %s)\n", prefix.c_str(), role.listen_address.c_str(),
                role.coordinator_target.c_str());
    std::fflush(stdout);
  }

  agent::SupervisorOptions sup_opts;
  sup_opts.worker_binary = worker;
  sup_opts.worker_args = o.worker_args;
  sup_opts.run_root = run_root;
  sup_opts.config_root = roots.config_root;
  sup_opts.data_root = roots.data_root;
  sup_opts.checkpoint_root = roots.checkpoint_root;
  sup_opts.token_file = token_file;
  sup_opts.stop_grace_micros = static_cast<int64_t>(role.grace_seconds) * 1'000'000;
  agent::ForkExecLauncher process_launcher;
  agent::Supervisor supervisor(&process_launcher, &clock, sup_opts);
  agent::AgentOptions aopts;
  aopts.coordinator_address = role.coordinator_target;
  aopts.token = token;
  aopts.agent_id = AgentIdFor(role, role.node_index);
  aopts.hostname = role.hostname;
  aopts.devices = role.devices;
  aopts.poll_interval_ms = 50;
  agent::Agent agent(aopts, &supervisor);
  std::atomic<bool> stop_agent{false};
  absl::Status agent_status;
  std::thread agent_thread([&] { agent_status = agent.Run(&stop_agent); });
  struct StopAgent {
    std::atomic<bool>* stop;
    std::thread* thread;
    ~StopAgent() {
      *stop = true;
      if (thread->joinable()) thread->join();
    }
  } stop_on_exit{&stop_agent, &agent_thread};

  KP_ASSIGN_OR_RETURN(auto client, CoordinatorClient::Connect({role.coordinator_target, token, "", 10000}));
  int exit_code = 1;
  if (role.submit) {
    KP_RETURN_IF_ERROR(WaitForAgents(*client, role, signals));
    if (role.start_coordinator) ClearStaleRendezvous(run_root, spec.name(), prefix);
    KP_ASSIGN_OR_RETURN(v1::JobStatus job, client->Submit(spec));
    std::printf("%s: job %s (%s), %d rank(s) on %d node(s)%s\n", prefix.c_str(), job.job_id().c_str(),
                spec.name().c_str(), spec.dp() * spec.cp(), role.num_nodes,
                spec.checkpoint().resume() ? ", resuming from the newest checkpoint" : "");
    std::fflush(stdout);
    std::atomic<bool> watching{true};
    std::thread canceller([&] {
      bool cancelled = false;
      while (watching.load()) {
        if (!cancelled && signals.signal() != 0) {
          std::fprintf(stderr, "%s: signal %d: stopping job %s (workers get %d s to checkpoint)\n", prefix.c_str(),
                       signals.signal(), job.job_id().c_str(), role.grace_seconds);
          client->Cancel(job.job_id(), absl::StrCat(role.launcher, ": signal ", signals.signal(),
                                                    " (scancel, time limit or pod deletion)"))
              .IgnoreError();
          cancelled = true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
    ProgressPrinter printer(stdout, !o.quiet && ::isatty(STDOUT_FILENO));
    auto final_status = client->Watch(job.job_id(), [&](const v1::JobEvent& e) {
      if (!o.quiet) printer.OnEvent(e);
    });
    printer.Finish();
    watching = false;
    canceller.join();
    if (!final_status.ok()) return final_status.status();
    std::printf("%s: job %s %s%s%s\n", prefix.c_str(), final_status->job_id().c_str(),
                StateName(final_status->state()).c_str(), final_status->message().empty() ? "" : ": ",
                final_status->message().c_str());
    exit_code = ExitCodeFor(*final_status);
    // Other nodes poll for the end; give them a few polls before the
    // embedded coordinator goes away.
    if (server != nullptr && role.num_nodes > 1) std::this_thread::sleep_for(std::chrono::milliseconds(8 * kPollMs));
  } else {
    int64_t deadline = NowMs() + role.register_timeout_ms;
    int64_t stop_deadline = 0;
    bool seen_job = false;
    v1::JobState last = v1::JOB_STATE_UNSPECIFIED;
    while (true) {
      auto job = FindJob(*client, role);
      if (job.ok()) {
        deadline = NowMs() + role.register_timeout_ms;  // the coordinator answers
        if (job->has_value()) {
          seen_job = true;
          last = (*job)->state();
          if (Terminal(last)) {
            exit_code = ExitCodeFor(**job);
            break;
          }
        }
      } else if (seen_job && Terminal(last)) {
        break;
      }
      if (signals.signal() != 0 && stop_deadline == 0) {
        // Node 0 cancels the job; wait for that, but not forever.
        stop_deadline = NowMs() + (role.grace_seconds + 10) * 1000LL;
      }
      if (stop_deadline != 0 && NowMs() > stop_deadline) {
        std::fprintf(stderr, "%s: signal received and the job did not end within %d s; stopping this node\n",
                     prefix.c_str(), role.grace_seconds + 10);
        return 3;
      }
      if (NowMs() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "the coordinator at ", role.coordinator_target, " did not answer for ", role.register_timeout_ms / 1000,
            " s", seen_job ? "" : " and no job of this launch appeared",
            ": check node 0's output (it runs the coordinator and submits the job)"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
    }
    std::printf("%s: node %d: job ended %s\n", prefix.c_str(), role.node_index, StateName(last).c_str());
  }
  stop_agent = true;
  agent_thread.join();
  if (server != nullptr) server->Shutdown();
  // A generated token is single-use: every node read it at start.
  if (role.start_coordinator && role.token_file.empty()) std::remove(role.shared_token_path.c_str());
  if (!agent_status.ok()) spdlog::warn("{}: agent: {}", prefix, agent_status.ToString());
  return exit_code;
}

int RunClusterNodeOrReport(const LaunchOptions& options, const NodeRole& role) {
  absl::StatusOr<int> rc = RunClusterNode(options, role);
  if (!rc.ok()) {
    std::fprintf(stderr, "kprun %s: %s\n", role.launcher.c_str(), rc.status().ToString().c_str());
    return absl::IsInvalidArgument(rc.status()) || absl::IsPermissionDenied(rc.status()) ? 2 : 1;
  }
  return *rc;
}

}  // namespace kp::launcher
