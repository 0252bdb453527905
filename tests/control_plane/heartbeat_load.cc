// Load test: N simulated agents heartbeating against one kp-coordinator (the
// real binary, a child process with SQLite state) on loopback. Some agents
// run jobs, so their heartbeats carry worker reports with progress and their
// replies carry assignments. Reports heartbeat latency p50/p99 and the
// coordinator's CPU use over the measured window, and prints the
// bench/write_results.py command that records them.
//
//   heartbeat_load --coordinator_binary bazel-bin/runtime/coordinator/kp-coordinator
//       [--agents 1000] [--seconds 20] [--interval_ms 1000] [--threads 8]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>

#include "kp/v1/coordinator.grpc.pb.h"
#include "launcher/client.h"
#include "runtime/agent/process_launcher.h"
#include "runtime/coordinator/rpc.h"

namespace {

using Clock = std::chrono::steady_clock;

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

// utime + stime of a process, in seconds.
double CpuSeconds(int64_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string f;
  long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stoll(f);
    if (i == 15) stime = std::stoll(f);
  }
  return static_cast<double>(utime + stime) / ::sysconf(_SC_CLK_TCK);
}

struct SimAgent {
  std::string id;
  std::vector<kp::v1::Assignment> assignments;  // from the last reply
  int64_t step = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"heartbeat load test against kp-coordinator"};
  std::string binary, work = "/tmp/kp-heartbeat-load";
  int agents = 1000, seconds = 20, interval_ms = 1000, threads = 8, devices = 8, jobs = 50;
  app.add_option("--coordinator_binary", binary)->required();
  app.add_option("--agents", agents)->capture_default_str();
  app.add_option("--seconds", seconds, "measured window")->capture_default_str();
  app.add_option("--interval_ms", interval_ms, "per-agent heartbeat period")->capture_default_str();
  app.add_option("--threads", threads, "client threads")->capture_default_str();
  app.add_option("--devices", devices, "GPUs per simulated agent")->capture_default_str();
  app.add_option("--jobs", jobs, "running jobs of dp=devices each")->capture_default_str();
  app.add_option("--work_dir", work)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::filesystem::remove_all(work);
  std::filesystem::create_directories(work);
  std::ofstream(work + "/token") << "load-token\n";
  const std::string address = "127.0.0.1:" + std::to_string(FreePort());
  kp::agent::ForkExecLauncher launcher;
  kp::agent::ProcessSpec spec;
  spec.argv = {binary, "--listen", address, "--db", work + "/state.db", "--token_file", work + "/token",
               "--metrics_port", "-1", "--heartbeat_timeout_ms", "60000", "--log_level", "warn"};
  spec.stdout_path = work + "/coordinator.log";
  spec.stderr_path = work + "/coordinator.log";
  auto pid = launcher.Start(spec);
  if (!pid.ok()) {
    std::fprintf(stderr, "%s\n", pid.status().ToString().c_str());
    return 1;
  }
  auto client = *kp::launcher::CoordinatorClient::Connect({address, "load-token", "", 10000, true});
  if (!client->List().ok()) {
    std::fprintf(stderr, "coordinator did not start; see %s/coordinator.log\n", work.c_str());
    return 1;
  }
  auto channel = *kp::rpc::MakeChannel({address, ""});
  auto stub = kp::v1::AgentService::NewStub(channel);
  auto ctx = [] {
    auto c = std::make_unique<grpc::ClientContext>();
    kp::rpc::AddBearer(c.get(), "load-token");
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return c;
  };

  std::vector<SimAgent> sims(agents);
  for (int i = 0; i < agents; ++i) {
    sims[i].id = "sim-" + std::to_string(i);
    kp::v1::RegisterAgentRequest req;
    req.mutable_info()->set_agent_id(sims[i].id);
    for (int d = 0; d < devices; ++d) {
      auto* dev = req.mutable_info()->add_devices();
      dev->set_index(d);
      dev->set_kind(kp::v1::DEVICE_KIND_CUDA);
      dev->set_model("NVIDIA H200");
    }
    kp::v1::RegisterAgentResponse resp;
    grpc::Status st = stub->RegisterAgent(ctx().get(), req, &resp);
    if (!st.ok()) {
      std::fprintf(stderr, "register %s: %s\n", sims[i].id.c_str(), st.error_message().c_str());
      return 1;
    }
  }
  for (int j = 0; j < jobs; ++j) {
    kp::v1::JobSpec s;
    s.set_name("load-" + std::to_string(j));
    s.set_config_yaml("model: {}\n");
    s.set_dp(devices);
    s.set_cp(1);
    s.set_steps(1000000);
    if (!client->Submit(s).ok()) return 1;
  }

  std::mutex mu;
  std::vector<double> latencies_ms;
  std::atomic<int64_t> errors{0}, with_workers{0};
  std::atomic<bool> measuring{false};
  const auto period = std::chrono::milliseconds(interval_ms);
  const auto warmup = std::chrono::seconds(2);
  const auto start = Clock::now();
  const auto end = start + warmup + std::chrono::seconds(seconds);
  auto worker = [&](int t) {
    std::vector<double> local;
    // Agent i beats at start + i * period / agents + k * period.
    std::vector<Clock::time_point> next;
    std::vector<int> mine;
    for (int i = t; i < agents; i += threads) {
      mine.push_back(i);
      next.push_back(start + period * i / agents);
    }
    while (true) {
      size_t k = std::min_element(next.begin(), next.end()) - next.begin();
      if (next[k] >= end) break;
      std::this_thread::sleep_until(next[k]);
      SimAgent& a = sims[mine[k]];
      kp::v1::HeartbeatRequest req;
      req.set_agent_id(a.id);
      a.step += 1;
      for (const auto& as : a.assignments) {
        auto* r = req.add_workers();
        r->set_job_id(as.job_id());
        r->set_generation(as.generation());
        r->set_rank(as.rank());
        r->set_state(kp::v1::WORKER_STATE_RUNNING);
        r->set_step(a.step);
        r->set_loss(10.0 / a.step);
        r->set_tokens_per_s(50000);
      }
      kp::v1::HeartbeatResponse resp;
      const auto t0 = Clock::now();
      grpc::Status st = stub->Heartbeat(ctx().get(), req, &resp);
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      if (!st.ok()) {
        ++errors;
      } else {
        a.assignments.assign(resp.assignments().begin(), resp.assignments().end());
        if (measuring.load()) {
          local.push_back(ms);
          if (!a.assignments.empty()) ++with_workers;
        }
      }
      next[k] += period;
    }
    std::lock_guard<std::mutex> lock(mu);
    latencies_ms.insert(latencies_ms.end(), local.begin(), local.end());
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker, t);
  std::this_thread::sleep_until(start + warmup);
  measuring = true;
  const double cpu0 = CpuSeconds(*pid);
  const auto w0 = Clock::now();
  for (auto& th : pool) th.join();
  const double wall = std::chrono::duration<double>(Clock::now() - w0).count();
  const double cpu_pct = 100.0 * (CpuSeconds(*pid) - cpu0) / wall;

  launcher.Signal(*pid, SIGTERM);
  for (int i = 0; i < 300 && !launcher.Poll(*pid); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));

  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto pct = [&](double p) {
    return latencies_ms.empty() ? 0.0 : latencies_ms[std::min(latencies_ms.size() - 1,
                                                             static_cast<size_t>(p * latencies_ms.size()))];
  };
  const double rate = latencies_ms.size() / wall;
  std::printf("agents %d, %d running jobs of dp=%d, heartbeat every %d ms, %d client threads\n", agents, jobs, devices,
              interval_ms, threads);
  std::printf("heartbeats measured: %zu in %.1f s (%.0f/s; %lld carried worker reports), errors: %lld\n",
              latencies_ms.size(), wall, rate, static_cast<long long>(with_workers.load()),
              static_cast<long long>(errors.load()));
  std::printf("latency ms: p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n", pct(0.5), pct(0.9), pct(0.99),
              latencies_ms.empty() ? 0.0 : latencies_ms.back());
  std::printf("coordinator CPU: %.1f%% of one core\n", cpu_pct);
  std::printf("\nrecord with:\npython3 bench/write_results.py control_plane --device \"<machine>\" --command "
              "\"heartbeat_load --agents %d --seconds %d --interval_ms %d --threads %d\" "
              "--result name=heartbeat_agents,value=%d,unit=agents "
              "--result name=heartbeat_p50_ms,value=%.3f,unit=ms "
              "--result name=heartbeat_p99_ms,value=%.3f,unit=ms "
              "--result name=coordinator_cpu_pct,value=%.1f,unit=percent\n",
              agents, seconds, interval_ms, threads, agents, pct(0.5), pct(0.99), cpu_pct);
  return errors.load() == 0 ? 0 : 1;
}
