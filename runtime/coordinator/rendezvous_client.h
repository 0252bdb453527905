// For workers: the coordinator's Rendezvous service (a key-value store with
// blocking waits), e.g. to pass the NCCL unique id from rank 0 to the others
// or to back a Gloo store. Keys are scoped by the job generation's prefix, so
// a restarted generation never reads a stale id. FromEnv() reads what
// kp-agent gives every worker: KP_RENDEZVOUS_ADDRESS, KP_RENDEZVOUS_PREFIX,
// KP_TOKEN_FILE (and KP_TLS_CA when the coordinator serves TLS).
#ifndef KP_RUNTIME_COORDINATOR_RENDEZVOUS_CLIENT_H_
#define KP_RUNTIME_COORDINATOR_RENDEZVOUS_CLIENT_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kp/v1/coordinator.grpc.pb.h"
#include "runtime/common/status.h"

namespace kp::rpc {

class RendezvousClient {
 public:
  static absl::StatusOr<std::unique_ptr<RendezvousClient>> FromEnv();
  static absl::StatusOr<std::unique_ptr<RendezvousClient>> Connect(const std::string& address,
                                                                    const std::string& token,
                                                                    const std::string& prefix,
                                                                    const std::string& tls_ca_file = "");

  absl::Status Set(const std::string& key, const std::string& value);
  absl::StatusOr<std::optional<std::string>> Get(const std::string& key);
  // DEADLINE_EXCEEDED (naming a missing key) when they do not all appear in time.
  absl::StatusOr<std::vector<std::string>> Wait(const std::vector<std::string>& keys,
                                                std::chrono::milliseconds timeout);
  const std::string& prefix() const { return prefix_; }

 private:
  RendezvousClient(std::unique_ptr<v1::Rendezvous::Stub> stub, std::string token, std::string prefix)
      : stub_(std::move(stub)), token_(std::move(token)), prefix_(std::move(prefix)) {}
  std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds timeout);

  std::unique_ptr<v1::Rendezvous::Stub> stub_;
  std::string token_;
  std::string prefix_;
};

}  // namespace kp::rpc

#endif  // KP_RUNTIME_COORDINATOR_RENDEZVOUS_CLIENT_H_
