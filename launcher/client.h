// A typed client for the Coordinator service, used by kprun's subcommands,
// the local launcher and the integration tests.
#ifndef KP_LAUNCHER_CLIENT_H_
#define KP_LAUNCHER_CLIENT_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kp/v1/coordinator.grpc.pb.h"
#include "runtime/common/status.h"

namespace kp::launcher {

struct ClientOptions {
  std::string address;
  std::string token;
  std::string tls_ca_file;
  int rpc_timeout_ms = 10000;
  // Wait (up to the timeout) for an unreachable coordinator instead of
  // failing at once: for daemons and tests that expect it to come (back) up.
  bool wait_for_ready = false;
};

class CoordinatorClient {
 public:
  static absl::StatusOr<std::unique_ptr<CoordinatorClient>> Connect(const ClientOptions& options);

  absl::StatusOr<v1::JobStatus> Submit(const v1::JobSpec& spec);
  absl::StatusOr<v1::JobStatus> Get(const std::string& job_id);
  absl::StatusOr<std::vector<v1::JobStatus>> List();
  absl::StatusOr<v1::JobStatus> Cancel(const std::string& job_id, const std::string& reason);
  absl::StatusOr<std::vector<v1::AgentStatus>> ListAgents();
  // Streams the job's events to `on_event` until the job ends, then returns
  // its final status. Reconnects (resuming after the last sequence) when the
  // stream breaks, so a coordinator restart does not end a watch.
  absl::StatusOr<v1::JobStatus> Watch(const std::string& job_id,
                                      const std::function<void(const v1::JobEvent&)>& on_event);

 private:
  CoordinatorClient(ClientOptions options, std::unique_ptr<v1::Coordinator::Stub> stub)
      : options_(std::move(options)), stub_(std::move(stub)) {}
  std::unique_ptr<grpc::ClientContext> Context(bool streaming = false);

  ClientOptions options_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_CLIENT_H_
