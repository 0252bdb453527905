// kp-agent: one per node. Registers the node's devices with kp-coordinator
// and runs the workers it is assigned.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <filesystem>
#include <thread>

#include <CLI/CLI.hpp>

#include "runtime/agent/agent.h"
#include "runtime/agent/device_discovery.h"
#include "runtime/agent/process_launcher.h"
#include "runtime/agent/supervisor.h"
#include "runtime/common/clock.h"
#include "runtime/common/logging.h"
#include "runtime/coordinator/rpc.h"
#include "runtime/snapshot/snapshot_service.h"
#include "runtime/snapshot/snapshot_store.h"

int main(int argc, char** argv) {
  CLI::App app{"kp-agent: registers this node's devices and supervises its workers"};
  std::string coordinator = "127.0.0.1:50051", token_file, tls_ca, agent_id, log_level = "info";
  kp::agent::SupervisorOptions sup;
  sup.run_root = "runs";
  int cpu_slots = 0;
  int64_t grace_ms = 10000;
  app.add_option("--coordinator", coordinator, "kp-coordinator host:port")->capture_default_str();
  app.add_option("--token_file", token_file, "bearer token file")->required();
  app.add_option("--tls_ca", tls_ca, "PEM CA certificate: connect with TLS");
  app.add_option("--agent_id", agent_id, "stable node id (default: hostname)");
  app.add_option("--cpu_slots", cpu_slots, "offer N CPU devices instead of GPUs");
  app.add_option("--worker_binary", sup.worker_binary,
                 "worker program (default: kp-train next to kp-agent, or ../worker/kp-train in a Bazel tree)");
  app.add_option("--worker_arg", sup.worker_args, "extra flag put before the per-rank ones (repeatable)");
  app.add_option("--run_root", sup.run_root, "run directories go here")->capture_default_str();
  app.add_option("--config_root", sup.config_root, "config_path of jobs resolves under this");
  app.add_option("--data_root", sup.data_root, "data_path of jobs resolves under this");
  app.add_option("--checkpoint_root", sup.checkpoint_root, "checkpoint dirs resolve under this");
  app.add_option("--stop_grace_ms", grace_ms, "SIGTERM to SIGKILL")->capture_default_str();
  std::string snapshot_listen = "0.0.0.0:0", snapshot_host;
  kp::snapshot::StoreOptions snapshot_store_options;
  app.add_option("--snapshot_listen", snapshot_listen,
                 "serve workers' in-memory snapshots here (host:port, port 0 = any; 'off' = keep none)")
      ->capture_default_str();
  app.add_option("--snapshot_host", snapshot_host,
                 "host peers reach the snapshot service at (default: --snapshot_listen's host, or the hostname)");
  app.add_option("--snapshot_max_bytes", snapshot_store_options.max_bytes, "memory bound of kept snapshots")
      ->capture_default_str();
  app.add_option("--snapshot_keep", snapshot_store_options.keep_per_rank, "snapshots kept per (job, rank)")
      ->capture_default_str();
  app.add_option("--log_level", log_level)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before any thread: all inherit it
  kp::InitLogging({.role = "agent", .level = log_level});

  auto token = kp::rpc::ReadTokenFile(token_file);
  if (!token.ok()) {
    spdlog::error("{}", token.status().ToString());
    return 2;
  }
  auto devices = kp::agent::DiscoverDevices(cpu_slots);
  if (!devices.ok()) {
    spdlog::error("{}", devices.status().ToString());
    return 2;
  }
  if (sup.worker_binary.empty()) {
    const auto dir = std::filesystem::read_symlink("/proc/self/exe").parent_path();
    for (const auto& candidate : {dir / "kp-train", dir / ".." / "worker" / "kp-train"}) {
      if (std::filesystem::exists(candidate)) {
        sup.worker_binary = candidate.lexically_normal().string();
        break;
      }
    }
    if (sup.worker_binary.empty()) {
      spdlog::error("no kp-train next to kp-agent; pass --worker_binary");
      return 2;
    }
  }
  char host[HOST_NAME_MAX + 1] = {};
  ::gethostname(host, sizeof(host));
  std::error_code ec;
  sup.run_root = std::filesystem::absolute(sup.run_root, ec).string();
  sup.worker_binary = std::filesystem::absolute(sup.worker_binary, ec).string();
  sup.token_file = std::filesystem::absolute(token_file, ec).string();
  if (!tls_ca.empty()) sup.tls_ca_file = std::filesystem::absolute(tls_ca, ec).string();
  sup.stop_grace_micros = grace_ms * 1000;

  kp::RealClock clock;
  kp::agent::ForkExecLauncher launcher;
  kp::agent::Supervisor supervisor(&launcher, &clock, sup);
  kp::agent::AgentOptions options;
  options.coordinator_address = coordinator;
  options.tls_ca_file = tls_ca;
  options.token = *token;
  options.hostname = host;
  options.agent_id = agent_id.empty() ? host : agent_id;
  options.devices = *devices;
  kp::snapshot::SnapshotStore snapshots(snapshot_store_options);
  std::unique_ptr<kp::snapshot::SnapshotServer> snapshot_server;
  if (snapshot_listen != "off" && !snapshot_listen.empty()) {
    auto server = kp::snapshot::SnapshotServer::Start(snapshot_listen, &snapshots, *token);
    if (!server.ok()) {
      spdlog::error("{}", server.status().ToString());
      return 2;
    }
    snapshot_server = std::move(*server);
    options.snapshots = &snapshots;
    options.snapshot_address =
        kp::snapshot::AdvertisedAddress(snapshot_listen, snapshot_host, host, snapshot_server->port());
    spdlog::info("snapshot service at {} (listening on {}, up to {} bytes)", options.snapshot_address,
                 snapshot_listen, snapshot_store_options.max_bytes);
  }
  kp::agent::Agent agent(options, &supervisor);

  std::atomic<bool> stop{false};
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&set, &sig);
    spdlog::info("signal {}: stopping workers", sig);
    stop = true;
  });
  absl::Status st = agent.Run(&stop);
  if (!stop.load()) {
    // Run returned on its own (an error): release the waiter thread.
    ::kill(::getpid(), SIGTERM);
  }
  waiter.join();
  if (!st.ok()) {
    spdlog::error("{}", st.ToString());
    return 1;
  }
  return 0;
}
