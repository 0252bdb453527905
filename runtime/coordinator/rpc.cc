#include "runtime/coordinator/rpc.h"

#include "runtime/common/files.h"

namespace kp::rpc {

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  KP_ASSIGN_OR_RETURN(std::string token, ReadFile(path));
  const char* ws = " \t\r\n";
  const size_t begin = token.find_first_not_of(ws);
  if (begin == std::string::npos) return absl::InvalidArgumentError("token file " + path + " is empty");
  token = token.substr(begin, token.find_last_not_of(ws) - begin + 1);
  return token;
}

grpc::Status CheckBearer(const grpc::ServerContext& context, const std::string& token) {
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing authorization metadata");
  const std::string_view got(it->second.data(), it->second.size());
  const std::string_view prefix = "Bearer ";
  if (got.substr(0, prefix.size()) != prefix) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "authorization is not a bearer token");
  }
  const std::string_view presented = got.substr(prefix.size());
  // Constant time over the expected token's length.
  unsigned char diff = presented.size() == token.size() ? 0 : 1;
  for (size_t i = 0; i < token.size(); ++i) {
    diff |= static_cast<unsigned char>(token[i]) ^
            static_cast<unsigned char>(i < presented.size() ? presented[i] : 0);
  }
  if (diff != 0 || token.empty()) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong bearer token");
  return grpc::Status::OK;
}

void AddBearer(grpc::ClientContext* context, const std::string& token) {
  context->AddMetadata("authorization", "Bearer " + token);
}

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.tls_ca_file.empty()) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    KP_ASSIGN_OR_RETURN(std::string ca, ReadFile(options.tls_ca_file));
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ca;
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  // Agents and watchers must find a restarted coordinator within seconds,
  // not after gRPC's default backoff (up to 120 s).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  return grpc::CreateCustomChannel(options.address, creds, args);
}

}  // namespace kp::rpc
