#include "runtime/snapshot/snapshot_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/coordinator/rpc.h"

namespace kp::snapshot {

SnapshotServiceImpl::SnapshotServiceImpl(SnapshotStore* store, std::string token)
    : store_(store), token_(std::move(token)) {}

grpc::Status SnapshotServiceImpl::Put(grpc::ServerContext* ctx, grpc::ServerReader<v1::SnapshotChunk>* reader,
                                      v1::PutSnapshotResponse* response) {
  if (!token_.empty()) {
    grpc::Status auth = rpc::CheckBearer(*ctx, token_);
    if (!auth.ok()) return auth;
  }
  v1::SnapshotChunk chunk;
  if (!reader->Read(&chunk) || !chunk.has_header()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first chunk of a Put must carry the header");
  }
  const v1::SnapshotHeader header = chunk.header();
  if (header.total_bytes() < 0 || header.total_bytes() > (int64_t{1} << 40)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "total_bytes out of range");
  }
  std::string bytes;
  bytes.reserve(static_cast<size_t>(header.total_bytes()));
  do {
    if (static_cast<int64_t>(bytes.size() + chunk.data().size()) > header.total_bytes()) {
      return grpc::Status(grpc::StatusCode::DATA_LOSS, "more bytes than the header's total_bytes");
    }
    bytes.append(chunk.data());
  } while (reader->Read(&chunk));
  absl::Status st = store_->Put(header, std::move(bytes));
  response->set_stored(st.ok());
  if (!st.ok()) {
    spdlog::warn("snapshot Put refused: {}", st.ToString());
    return rpc::ToGrpc(st);
  }
  spdlog::debug("stored snapshot {}", header.key().ShortDebugString());
  return grpc::Status::OK;
}

grpc::Status SnapshotServiceImpl::Get(grpc::ServerContext* ctx, const v1::GetSnapshotRequest* request,
                                      grpc::ServerWriter<v1::SnapshotChunk>* writer) {
  if (!token_.empty()) {
    grpc::Status auth = rpc::CheckBearer(*ctx, token_);
    if (!auth.ok()) return auth;
  }
  absl::StatusOr<StoredSnapshot> s = store_->Get(request->job_id(), request->rank(), request->step());
  if (!s.ok()) return rpc::ToGrpc(s.status());
  const std::string& bytes = *s->bytes;
  size_t offset = 0;
  do {
    v1::SnapshotChunk chunk;
    if (offset == 0) *chunk.mutable_header() = s->header;
    const size_t n = std::min(kChunkBytes, bytes.size() - offset);
    chunk.set_data(bytes.data() + offset, n);
    offset += n;
    if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  } while (offset < bytes.size());
  return grpc::Status::OK;
}

absl::StatusOr<std::unique_ptr<SnapshotServer>> SnapshotServer::Start(const std::string& listen,
                                                                      SnapshotStore* store,
                                                                      const std::string& token) {
  std::unique_ptr<SnapshotServer> s(new SnapshotServer());
  s->service_ = std::make_unique<SnapshotServiceImpl>(store, token);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &s->port_);
  builder.RegisterService(s->service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(2 * kChunkBytes));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, kWindowBytes);
  s->server_ = builder.BuildAndStart();
  if (!s->server_ || s->port_ == 0) {
    return absl::UnavailableError("snapshot service: cannot listen on " + listen);
  }
  return s;
}

SnapshotServer::~SnapshotServer() {
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

std::string AdvertisedAddress(const std::string& listen, const std::string& advertise_host,
                              const std::string& hostname, int port) {
  const size_t colon = listen.rfind(':');
  std::string host = colon == std::string::npos ? "" : listen.substr(0, colon);
  if (!advertise_host.empty()) {
    host = advertise_host;
  } else if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") {
    host = hostname;
  }
  return absl::StrCat(host, ":", port);
}

}  // namespace kp::snapshot
