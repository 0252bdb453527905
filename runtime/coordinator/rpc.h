// gRPC plumbing shared by the coordinator, the agent and kprun: bearer-token
// auth on both sides, channels (plain or TLS) with bounded message sizes, and
// absl::Status <-> grpc::Status.
#ifndef KP_RUNTIME_COORDINATOR_RPC_H_
#define KP_RUNTIME_COORDINATOR_RPC_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "runtime/common/status.h"

namespace kp::rpc {

// Large enough for a 1 MiB inline config plus the rest of a spec; small
// enough that one client cannot make the coordinator buffer much.
inline constexpr int kMaxMessageBytes = 4 << 20;

// Reads a token file (surrounding whitespace dropped); fails when empty.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// OK when the call carries "authorization: Bearer <token>"; UNAUTHENTICATED
// otherwise. Compares in constant time.
grpc::Status CheckBearer(const grpc::ServerContext& context, const std::string& token);
void AddBearer(grpc::ClientContext* context, const std::string& token);

grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

struct ChannelOptions {
  std::string address;      // host:port
  std::string tls_ca_file;  // empty = plaintext
};
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& options);

}  // namespace kp::rpc

#endif  // KP_RUNTIME_COORDINATOR_RPC_H_
