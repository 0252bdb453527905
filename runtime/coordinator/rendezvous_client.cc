#include "runtime/coordinator/rendezvous_client.h"

#include <cstdlib>

#include "runtime/coordinator/rpc.h"

namespace kp::rpc {

absl::StatusOr<std::unique_ptr<RendezvousClient>> RendezvousClient::FromEnv() {
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v != nullptr ? v : "");
  };
  const std::string address = env("KP_RENDEZVOUS_ADDRESS"), prefix = env("KP_RENDEZVOUS_PREFIX");
  const std::string token_file = env("KP_TOKEN_FILE");
  if (address.empty() || prefix.empty() || token_file.empty()) {
    return absl::FailedPreconditionError(
        "KP_RENDEZVOUS_ADDRESS, KP_RENDEZVOUS_PREFIX and KP_TOKEN_FILE must be set (kp-agent sets them)");
  }
  KP_ASSIGN_OR_RETURN(std::string token, ReadTokenFile(token_file));
  return Connect(address, token, prefix, env("KP_TLS_CA"));
}

absl::StatusOr<std::unique_ptr<RendezvousClient>> RendezvousClient::Connect(const std::string& address,
                                                                            const std::string& token,
                                                                            const std::string& prefix,
                                                                            const std::string& tls_ca_file) {
  KP_ASSIGN_OR_RETURN(auto channel, MakeChannel({address, tls_ca_file}));
  return std::unique_ptr<RendezvousClient>(new RendezvousClient(v1::Rendezvous::NewStub(channel), token, prefix));
}

std::unique_ptr<grpc::ClientContext> RendezvousClient::Context(std::chrono::milliseconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  AddBearer(ctx.get(), token_);
  ctx->set_wait_for_ready(true);
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

absl::Status RendezvousClient::Set(const std::string& key, const std::string& value) {
  v1::KvSetRequest req;
  req.set_key(prefix_ + key);
  req.set_value(value);
  v1::KvSetResponse resp;
  return FromGrpc(stub_->Set(Context(std::chrono::seconds(30)).get(), req, &resp));
}

absl::StatusOr<std::optional<std::string>> RendezvousClient::Get(const std::string& key) {
  v1::KvGetRequest req;
  req.set_key(prefix_ + key);
  v1::KvGetResponse resp;
  KP_RETURN_IF_ERROR(FromGrpc(stub_->Get(Context(std::chrono::seconds(30)).get(), req, &resp)));
  if (!resp.found()) return std::optional<std::string>();
  return std::optional<std::string>(resp.value());
}

absl::StatusOr<std::vector<std::string>> RendezvousClient::Wait(const std::vector<std::string>& keys,
                                                                std::chrono::milliseconds timeout) {
  v1::KvWaitRequest req;
  for (const auto& k : keys) req.add_keys(prefix_ + k);
  req.set_timeout_ms(timeout.count());
  v1::KvWaitResponse resp;
  // The RPC deadline leaves the server room to answer DEADLINE_EXCEEDED itself.
  KP_RETURN_IF_ERROR(FromGrpc(stub_->Wait(Context(timeout + std::chrono::seconds(5)).get(), req, &resp)));
  return std::vector<std::string>(resp.values().begin(), resp.values().end());
}

}  // namespace kp::rpc
