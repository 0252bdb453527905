// Runs a Coordinator behind gRPC: the three kp.v1 services, grpc.health.v1,
// the Prometheus listener and the ticker that drives liveness and
// scheduling. kp-coordinator's main and kprun local both use it.
#ifndef KP_RUNTIME_COORDINATOR_SERVER_H_
#define KP_RUNTIME_COORDINATOR_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "runtime/coordinator/coordinator.h"
#include "runtime/coordinator/metrics_http.h"
#include "runtime/coordinator/service.h"

namespace kp::coordinator {

struct ServerOptions {
  std::string listen_address = "127.0.0.1:0";  // port 0 = any free port
  std::string token;                           // required
  std::string tls_cert_file;                   // both or neither
  std::string tls_key_file;
  std::string metrics_host = "127.0.0.1";
  int metrics_port = -1;  // -1 = no metrics listener, 0 = any free port
  int tick_interval_ms = 500;  // 0 = no ticker (tests call Tick())
};

class CoordinatorServer {
 public:
  // Also sets the coordinator's advertised address (for the Rendezvous
  // service) to the bound address when it has none.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(Coordinator* coordinator, ServerOptions options);
  ~CoordinatorServer();
  int port() const { return port_; }
  int metrics_port() const { return metrics_ ? metrics_->port() : -1; }
  std::string address() const;
  void Shutdown();  // idempotent
  void Wait();

 private:
  explicit CoordinatorServer(Coordinator* c, ServerOptions options);
  void TickLoop();

  Coordinator* coordinator_;
  ServerOptions options_;
  CoordinatorServiceImpl coordinator_service_;
  AgentServiceImpl agent_service_;
  RendezvousServiceImpl rendezvous_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsHttpServer> metrics_;
  int port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread ticker_;
};

}  // namespace kp::coordinator

#endif  // KP_RUNTIME_COORDINATOR_SERVER_H_
