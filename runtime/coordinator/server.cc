#include "runtime/coordinator/server.h"

#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include "runtime/common/files.h"
#include "runtime/coordinator/rpc.h"

namespace kp::coordinator {

CoordinatorServer::CoordinatorServer(Coordinator* c, ServerOptions options)
    : coordinator_(c),
      options_(std::move(options)),
      coordinator_service_(c, options_.token),
      agent_service_(c, options_.token),
      rendezvous_service_(c, options_.token) {}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(Coordinator* coordinator,
                                                                            ServerOptions options) {
  if (options.token.empty()) return absl::InvalidArgumentError("a bearer token is required (--token_file)");
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (options.tls_cert_file.empty()) {
    creds = grpc::InsecureServerCredentials();
  } else {
    KP_ASSIGN_OR_RETURN(std::string cert, ReadFile(options.tls_cert_file));
    KP_ASSIGN_OR_RETURN(std::string key, ReadFile(options.tls_key_file));
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({key, cert});
    creds = grpc::SslServerCredentials(ssl);
  }
  std::unique_ptr<CoordinatorServer> s(new CoordinatorServer(coordinator, options));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, creds, &s->port_);
  builder.SetMaxReceiveMessageSize(rpc::kMaxMessageBytes);
  builder.SetMaxSendMessageSize(rpc::kMaxMessageBytes);
  builder.RegisterService(&s->coordinator_service_);
  builder.RegisterService(&s->agent_service_);
  builder.RegisterService(&s->rendezvous_service_);
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError("cannot listen on " + options.listen_address);
  }
  s->server_->GetHealthCheckService()->SetServingStatus(true);
  if (options.metrics_port >= 0) {
    KP_ASSIGN_OR_RETURN(s->metrics_, MetricsHttpServer::Start(options.metrics_host, options.metrics_port,
                                                              [coordinator] { return coordinator->PrometheusText(); }));
  }
  coordinator->SetAdvertisedAddress(s->address());
  if (options.tick_interval_ms > 0) s->ticker_ = std::thread([p = s.get()] { p->TickLoop(); });
  spdlog::info("coordinator listening on port {} ({}){}", s->port_, options.tls_cert_file.empty() ? "plaintext" : "TLS",
               s->metrics_ ? ", metrics on port " + std::to_string(s->metrics_->port()) : "");
  return s;
}

std::string CoordinatorServer::address() const {
  std::string host = options_.listen_address.substr(0, options_.listen_address.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]") host = "127.0.0.1";
  return host + ":" + std::to_string(port_);
}

void CoordinatorServer::TickLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::milliseconds(options_.tick_interval_ms));
    if (stopping_) break;
    lock.unlock();
    coordinator_->Tick();
    lock.lock();
  }
}

void CoordinatorServer::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (ticker_.joinable()) ticker_.join();
  coordinator_->Shutdown();  // releases watchers and rendezvous waiters
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (metrics_) metrics_->Stop();
}

void CoordinatorServer::Wait() { server_->Wait(); }

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

}  // namespace kp::coordinator
