// kp-agent's SnapshotService (proto/kp/v1/snapshot.proto) over a
// SnapshotStore, and the gRPC server that hosts it. A Put stream is
// assembled in memory, checked (size, checksum) and only then stored, so a
// sender that dies mid-transfer leaves nothing behind.
#ifndef KP_RUNTIME_SNAPSHOT_SNAPSHOT_SERVICE_H_
#define KP_RUNTIME_SNAPSHOT_SNAPSHOT_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "kp/v1/snapshot.grpc.pb.h"
#include "runtime/common/status.h"
#include "runtime/snapshot/snapshot_store.h"

namespace kp::snapshot {

// Chunks of a Put or Get stream carry at most this many image bytes.
inline constexpr size_t kChunkBytes = 1 << 20;
// HTTP/2 stream window of snapshot channels, both sides: an image streams
// without waiting for a window update every 64 KiB (on a busy host each
// update waits for the receiver to be scheduled).
inline constexpr int kWindowBytes = 16 << 20;

class SnapshotServiceImpl final : public v1::SnapshotService::Service {
 public:
  // `token` empty: no authentication (tests only).
  SnapshotServiceImpl(SnapshotStore* store, std::string token);
  grpc::Status Put(grpc::ServerContext* ctx, grpc::ServerReader<v1::SnapshotChunk>* reader,
                   v1::PutSnapshotResponse* response) override;
  grpc::Status Get(grpc::ServerContext* ctx, const v1::GetSnapshotRequest* request,
                   grpc::ServerWriter<v1::SnapshotChunk>* writer) override;

 private:
  SnapshotStore* store_;
  std::string token_;
};

class SnapshotServer {
 public:
  // Listens on `listen` ("host:port", port 0 = any free one).
  static absl::StatusOr<std::unique_ptr<SnapshotServer>> Start(const std::string& listen, SnapshotStore* store,
                                                               const std::string& token);
  ~SnapshotServer();
  int port() const { return port_; }

 private:
  SnapshotServer() = default;
  std::unique_ptr<SnapshotServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

// The address peers reach a server on `listen` at, with the bound port:
// `advertise_host` when given, else the listen host unless it is a wildcard
// (0.0.0.0, [::], empty), else `hostname`.
std::string AdvertisedAddress(const std::string& listen, const std::string& advertise_host,
                              const std::string& hostname, int port);

}  // namespace kp::snapshot

#endif  // KP_RUNTIME_SNAPSHOT_SNAPSHOT_SERVICE_H_
