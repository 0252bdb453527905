#include "runtime/snapshot/snapshot_client.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "runtime/coordinator/rpc.h"
#include "runtime/snapshot/checksum.h"
#include "runtime/snapshot/snapshot_service.h"

namespace kp::snapshot {

struct SnapshotClient::Stub {
  std::unique_ptr<v1::SnapshotService::Stub> stub;
  std::unique_ptr<grpc::ClientContext> Context(const ClientOptions& options) const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!options.token.empty()) rpc::AddBearer(ctx.get(), options.token);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(options.timeout_ms));
    return ctx;
  }
};

SnapshotClient::~SnapshotClient() = default;

SnapshotClient::SnapshotClient(const std::string& address, ClientOptions options)
    : address_(address), options_(std::move(options)) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(2 * kChunkBytes));
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, kWindowBytes);
  stub_ = std::make_unique<Stub>();
  stub_->stub = v1::SnapshotService::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

absl::Status SnapshotClient::Put(const Key& key, std::string_view image) {
  auto ctx = stub_->Context(options_);
  v1::PutSnapshotResponse resp;
  auto writer = stub_->stub->Put(ctx.get(), &resp);
  size_t offset = 0;
  bool ok = true;
  do {
    v1::SnapshotChunk chunk;
    if (offset == 0) {
      auto* h = chunk.mutable_header();
      h->mutable_key()->set_job_id(key.job_id);
      h->mutable_key()->set_rank(key.rank);
      h->mutable_key()->set_step(key.step);
      h->mutable_key()->set_generation(key.generation);
      h->mutable_key()->set_world_size(key.world_size);
      h->set_total_bytes(static_cast<int64_t>(image.size()));
      h->set_checksum(Checksum(image));
    }
    const size_t n = std::min(kChunkBytes, image.size() - offset);
    chunk.set_data(image.data() + offset, n);
    offset += n;
    ok = writer->Write(chunk);
  } while (ok && offset < image.size());
  writer->WritesDone();
  absl::Status st = rpc::FromGrpc(writer->Finish());
  if (!st.ok()) return absl::Status(st.code(), absl::StrCat("snapshot Put to ", address_, ": ", st.message()));
  return absl::OkStatus();
}

absl::StatusOr<Fetched> SnapshotClient::Get(const std::string& job_id, int rank, int64_t step) {
  auto ctx = stub_->Context(options_);
  v1::GetSnapshotRequest req;
  req.set_job_id(job_id);
  req.set_rank(rank);
  req.set_step(step);
  auto reader = stub_->stub->Get(ctx.get(), req);
  Fetched out;
  v1::SnapshotHeader header;
  v1::SnapshotChunk chunk;
  bool first = true;
  while (reader->Read(&chunk)) {
    if (first) {
      header = chunk.header();
      if (header.total_bytes() >= 0 && header.total_bytes() < (int64_t{1} << 40)) {
        out.bytes.reserve(static_cast<size_t>(header.total_bytes()));
      }
      first = false;
    }
    out.bytes.append(chunk.data());
  }
  absl::Status st = rpc::FromGrpc(reader->Finish());
  const std::string what = absl::StrCat("snapshot of job ", job_id, " rank ", rank, " step ", step, " from ", address_);
  if (!st.ok()) return absl::Status(st.code(), what + ": " + std::string(st.message()));
  const v1::SnapshotKey& k = header.key();
  if (first) return absl::DataLossError(what + ": empty stream");
  if (k.job_id() != job_id || k.rank() != rank || k.step() != step) {
    return absl::DataLossError(what + ": the agent sent " + k.ShortDebugString());
  }
  if (static_cast<int64_t>(out.bytes.size()) != header.total_bytes()) {
    return absl::DataLossError(absl::StrCat(what, ": got ", out.bytes.size(), " bytes, header says ",
                                            header.total_bytes()));
  }
  if (Checksum(out.bytes) != header.checksum()) return absl::DataLossError(what + ": checksum mismatch");
  out.key = Key{k.job_id(), k.rank(), k.step(), k.generation(), k.world_size()};
  return out;
}

}  // namespace kp::snapshot
