// kp-coordinator: the control plane's server. See server.h for what it runs.
#include <csignal>
#include <string>

#include <CLI/CLI.hpp>

#include "runtime/common/clock.h"
#include "runtime/common/logging.h"
#include "runtime/coordinator/coordinator.h"
#include "runtime/coordinator/rpc.h"
#include "runtime/coordinator/server.h"
#include "runtime/coordinator/state_store.h"

int main(int argc, char** argv) {
  CLI::App app{"kp-coordinator: accepts jobs, places them on agents' devices, keeps state in SQLite"};
  std::string listen = "127.0.0.1:50051", db = "kp-coordinator.db", token_file, tls_cert, tls_key;
  std::string metrics_host = "127.0.0.1", log_level = "info";
  int metrics_port = 9464;
  int64_t heartbeat_timeout_ms = 10000, heartbeat_interval_ms = 1000;
  kp::coordinator::SpecRoots roots;
  std::string advertise;
  int64_t replacement_deadline_ms = 120000;
  int default_max_restarts = 0;
  kp::coordinator::recovery::RecoveryConfig recovery;
  app.add_option("--listen", listen, "host:port for gRPC (port 0 = any)")->capture_default_str();
  app.add_option("--db", db, "SQLite state database (WAL mode)")->capture_default_str();
  app.add_option("--token_file", token_file, "file holding the bearer token clients must send")->required();
  app.add_option("--tls_cert", tls_cert, "PEM certificate chain: serve TLS");
  app.add_option("--tls_key", tls_key, "PEM private key for --tls_cert");
  app.add_option("--metrics_host", metrics_host, "Prometheus listener address")->capture_default_str();
  app.add_option("--metrics_port", metrics_port, "Prometheus port (-1 = off, 0 = any)")->capture_default_str();
  app.add_option("--heartbeat_timeout_ms", heartbeat_timeout_ms, "agent declared lost after")->capture_default_str();
  app.add_option("--heartbeat_interval_ms", heartbeat_interval_ms, "agents heartbeat every")->capture_default_str();
  app.add_option("--config_root", roots.config_root, "config_path of a spec is relative to this");
  app.add_option("--data_root", roots.data_root, "data_path of a spec is relative to this");
  app.add_option("--checkpoint_root", roots.checkpoint_root, "checkpoint.dir of a spec is relative to this");
  app.add_option("--advertise", advertise, "host:port workers use to reach the rendezvous service");
  app.add_option("--replacement_deadline_ms", replacement_deadline_ms,
                 "after a fault, how long a job waits for devices before it fails")
      ->capture_default_str();
  app.add_option("--default_max_restarts", default_max_restarts, "restarts of a job whose spec says 0")
      ->capture_default_str();
  app.add_option("--straggler_factor", recovery.straggler.factor, "straggler: slower than this x the median")
      ->capture_default_str();
  app.add_option("--straggler_window", recovery.straggler.window, "straggler: step times per verdict")
      ->capture_default_str();
  app.add_flag("--exclude_stragglers", recovery.exclude_stragglers,
               "a flagged straggler's device is not used by the job's next generation");
  app.add_option("--log_level", log_level)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  // Blocked before any thread starts so every thread inherits it; main
  // waits for them with sigwait and shuts down cleanly.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  kp::InitLogging({.role = "coordinator", .level = log_level});
  auto token = kp::rpc::ReadTokenFile(token_file);
  if (!token.ok()) {
    spdlog::error("{}", token.status().ToString());
    return 2;
  }
  auto store = kp::coordinator::OpenSqliteStateStore(db);
  if (!store.ok()) {
    spdlog::error("{}", store.status().ToString());
    return 1;
  }
  kp::RealClock clock;
  kp::coordinator::CoordinatorOptions options;
  options.roots = roots;
  options.heartbeat_timeout_micros = heartbeat_timeout_ms * 1000;
  options.heartbeat_interval_ms = heartbeat_interval_ms;
  recovery.policy.replacement_deadline_micros = replacement_deadline_ms * 1000;
  recovery.policy.default_max_restarts = default_max_restarts;
  options.recovery = recovery;
  options.advertised_address = advertise;
  auto coordinator = kp::coordinator::Coordinator::Create(store->get(), &clock, options);
  if (!coordinator.ok()) {
    spdlog::error("{}", coordinator.status().ToString());
    return 1;
  }
  kp::coordinator::ServerOptions server_options;
  server_options.listen_address = listen;
  server_options.token = *token;
  server_options.tls_cert_file = tls_cert;
  server_options.tls_key_file = tls_key;
  server_options.metrics_host = metrics_host;
  server_options.metrics_port = metrics_port;
  auto server = kp::coordinator::CoordinatorServer::Start(coordinator->get(), server_options);
  if (!server.ok()) {
    spdlog::error("{}", server.status().ToString());
    return 1;
  }
  std::printf("kp-coordinator listening on %s\n", (*server)->address().c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  spdlog::info("signal {}: shutting down", sig);
  (*server)->Shutdown();
  return 0;
}
