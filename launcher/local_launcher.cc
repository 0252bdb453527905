// kprun local: an embedded coordinator (in-memory state: a local run needs no
// restart story) on a loopback port, one in-process agent offering this
// machine's GPUs or CPU slots, and a watch that prints progress. Workers are
// real child processes, exactly as under kp-agent, so a local run exercises
// the same path as a cluster run. SIGINT/SIGTERM cancel the job and stop the
// workers before kprun exits.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <chrono>
#include <thread>

#include "launcher/client.h"
#include "launcher/launcher.h"
#include "launcher/progress.h"
#include "runtime/agent/agent.h"
#include "runtime/agent/device_discovery.h"
#include "runtime/agent/process_launcher.h"
#include "runtime/agent/supervisor.h"
#include "runtime/common/clock.h"
#include "runtime/common/files.h"
#include "runtime/coordinator/coordinator.h"
#include "runtime/coordinator/server.h"
#include "runtime/coordinator/state_store.h"

namespace kp::launcher {
namespace {

absl::StatusOr<std::string> RandomToken() {
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::UnavailableError("cannot open /dev/urandom");
  unsigned char raw[24];
  ssize_t n = ::read(fd, raw, sizeof(raw));
  ::close(fd);
  if (n != sizeof(raw)) return absl::UnavailableError("short read from /dev/urandom");
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

std::string Absolute(const std::string& p) {
  std::error_code ec;
  return std::filesystem::absolute(p, ec).lexically_normal().string();
}

class LocalLauncher final : public Launcher {
 public:
  std::string name() const override { return "local"; }

  int Launch(const LaunchOptions& o) override {
    absl::StatusOr<int> rc = Run(o);
    if (!rc.ok()) {
      std::fprintf(stderr, "kprun local: %s\n", rc.status().ToString().c_str());
      return absl::IsInvalidArgument(rc.status()) || absl::IsPermissionDenied(rc.status()) ? 2 : 1;
    }
    return *rc;
  }

 private:
  absl::StatusOr<int> Run(const LaunchOptions& o) {
    const std::string worker = o.worker_binary.empty() ? DefaultWorkerBinary() : Absolute(o.worker_binary);
    if (worker.empty() || ::access(worker.c_str(), X_OK) != 0) {
      return absl::InvalidArgumentError("worker binary " + (worker.empty() ? std::string("kp-train") : worker) +
                                        " not found or not executable; pass --worker_binary");
    }
    const std::string run_root = Absolute(o.run_root);
    coordinator::SpecRoots roots;
    roots.config_root = Absolute(o.config_root.empty() ? "." : o.config_root);
    roots.data_root = Absolute(o.data_root.empty() ? "." : o.data_root);
    roots.checkpoint_root = Absolute(o.checkpoint_root.empty() ? run_root + "/checkpoints" : o.checkpoint_root);
    KP_RETURN_IF_ERROR(MakeDirs(roots.checkpoint_root));
    KP_RETURN_IF_ERROR(coordinator::ValidateJobSpec(o.spec, roots));

    // Devices: GPUs when nvidia-smi finds some, else one CPU slot per rank.
    const int world = o.spec.dp() * o.spec.cp();
    absl::StatusOr<std::vector<v1::Device>> devices =
        o.cpu_slots > 0 ? agent::CpuSlots(o.cpu_slots) : agent::DiscoverDevices(0);
    if (!devices.ok()) devices = agent::CpuSlots(world);
    if (static_cast<int>(devices->size()) < world) {
      if (!o.spec.cpu_fallback() || devices->front().kind() == v1::DEVICE_KIND_CPU) {
        // One machine never grows: waiting in the queue would wait forever.
        return absl::InvalidArgumentError("job needs dp*cp = " + std::to_string(world) + " devices, this machine offers " +
                                          std::to_string(devices->size()) +
                                          " (set cpu_fallback: true or pass --cpu_slots)");
      }
      devices = agent::CpuSlots(world);
    }

    // The token never leaves this machine; workers read it from a 0600 file.
    KP_ASSIGN_OR_RETURN(std::string token, RandomToken());
    const std::string private_dir = run_root + "/.kprun";
    KP_RETURN_IF_ERROR(MakeDirs(private_dir));
    ::chmod(private_dir.c_str(), 0700);  // before the token lands in it
    const std::string token_file = private_dir + "/token-" + std::to_string(::getpid());
    KP_RETURN_IF_ERROR(WriteFileAtomically(token_file, token));
    ::chmod(token_file.c_str(), 0600);
    struct RemoveOnExit {
      std::string path;
      ~RemoveOnExit() { std::remove(path.c_str()); }
    } remove_token{token_file};

    RealClock clock;
    auto store = coordinator::NewMemoryStateStore();
    coordinator::CoordinatorOptions copts;
    copts.roots = roots;
    copts.heartbeat_interval_ms = 500;
    KP_ASSIGN_OR_RETURN(auto coord, coordinator::Coordinator::Create(store.get(), &clock, copts));
    coordinator::ServerOptions sopts;
    sopts.token = token;
    KP_ASSIGN_OR_RETURN(auto server, coordinator::CoordinatorServer::Start(coord.get(), sopts));

    agent::SupervisorOptions sup_opts;
    sup_opts.worker_binary = worker;
    sup_opts.worker_args = o.worker_args;
    sup_opts.run_root = run_root;
    sup_opts.config_root = roots.config_root;
    sup_opts.data_root = roots.data_root;
    sup_opts.checkpoint_root = roots.checkpoint_root;
    sup_opts.token_file = token_file;
    sup_opts.stop_grace_micros = static_cast<int64_t>(o.stop_grace_ms) * 1000;
    agent::ForkExecLauncher process_launcher;
    agent::Supervisor supervisor(&process_launcher, &clock, sup_opts);
    agent::AgentOptions aopts;
    aopts.coordinator_address = server->address();
    aopts.token = token;
    aopts.agent_id = "local";
    aopts.hostname = "localhost";
    aopts.devices = *devices;
    aopts.poll_interval_ms = 50;
    agent::Agent agent(aopts, &supervisor);
    std::atomic<bool> stop_agent{false};
    absl::Status agent_status;
    std::thread agent_thread([&] { agent_status = agent.Run(&stop_agent); });

    KP_ASSIGN_OR_RETURN(auto client, CoordinatorClient::Connect({server->address(), token, "", 10000}));
    // Submit once the agent has registered, so that submission checks that
    // read the cluster's devices (an FP8 job on a machine without FP8) see
    // this machine's. The agent registers within milliseconds; after 10 s
    // the job goes in anyway and the worker's own checks apply.
    for (int i = 0; i < 200; ++i) {
      auto agents = client->ListAgents();
      if (agents.ok() && !agents->empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    auto job = client->Submit(o.spec);
    if (!job.ok()) {
      stop_agent = true;
      agent_thread.join();
      return job.status();
    }
    if (!o.quiet) {
      std::printf("kprun local: job %s (%s), %d rank(s) on %zu %s device(s), run dir %s/%s-%s\n",
                  job->job_id().c_str(), o.spec.name().c_str(), world, devices->size(),
                  devices->front().kind() == v1::DEVICE_KIND_CUDA ? "CUDA" : "CPU", run_root.c_str(),
                  o.spec.name().c_str(), job->job_id().c_str());
      std::fflush(stdout);
    }

    // Ctrl-C: cancel the job; the watch then ends with CANCELLED.
    std::atomic<bool> done{false};
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    std::thread canceller([&] {
      while (!done.load()) {
        timespec ts{0, 100'000'000};
        if (sigtimedwait(&set, nullptr, &ts) > 0) {
          std::fprintf(stderr, "\nkprun local: interrupted, cancelling %s\n", job->job_id().c_str());
          client->Cancel(job->job_id(), "interrupted").IgnoreError();
        }
      }
    });

    ProgressPrinter printer(stdout, !o.quiet && ::isatty(STDOUT_FILENO));
    auto final_status = client->Watch(job->job_id(), [&](const v1::JobEvent& e) {
      if (!o.quiet) printer.OnEvent(e);
    });
    printer.Finish();
    done = true;
    canceller.join();
    stop_agent = true;
    agent_thread.join();
    server->Shutdown();
    if (!final_status.ok()) return final_status.status();
    const v1::JobStatus& fs = *final_status;
    std::printf("kprun local: job %s %s%s%s\n", fs.job_id().c_str(), StateName(fs.state()).c_str(),
                fs.message().empty() ? "" : ": ", fs.message().c_str());
    if (fs.state() == v1::JOB_STATE_FAILED) {
      std::printf("kprun local: worker logs in %s/%s-%s/logs\n", run_root.c_str(), fs.spec().name().c_str(),
                  fs.job_id().c_str());
    }
    return ExitCodeFor(fs);
  }
};

class NotImplementedLauncher final : public Launcher {
 public:
  explicit NotImplementedLauncher(std::string name) : name_(std::move(name)) {}
  std::string name() const override { return name_; }
  int Launch(const LaunchOptions&) override {
    std::fprintf(stderr, "kprun %s: not yet implemented (use `kprun local`, or start kp-coordinator and kp-agent "
                         "yourself and use `kprun submit`)\n", name_.c_str());
    return 2;
  }

 private:
  std::string name_;
};

}  // namespace

std::unique_ptr<Launcher> NewLocalLauncher() { return std::make_unique<LocalLauncher>(); }

std::unique_ptr<Launcher> NewNotImplementedLauncher(const std::string& name) {
  return std::make_unique<NotImplementedLauncher>(name);
}

std::string DefaultWorkerBinary() {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  const auto dir = self.parent_path();
  for (const auto& candidate : {dir / "kp-train", dir / ".." / "runtime" / "worker" / "kp-train"}) {
    if (std::filesystem::exists(candidate, ec)) return candidate.lexically_normal().string();
  }
  return "";
}

}  // namespace kp::launcher
