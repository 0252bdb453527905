// The worker's side of SnapshotService: send an image to an agent (Put) and
// fetch one back (Get), checking the fetched bytes against the header's size
// and checksum and the key asked for. Plaintext gRPC with the bearer token.
// The header is free of gRPC and protobuf types so libtorch code includes it.
#ifndef KP_RUNTIME_SNAPSHOT_SNAPSHOT_CLIENT_H_
#define KP_RUNTIME_SNAPSHOT_SNAPSHOT_CLIENT_H_

#include <memory>
#include <string>
#include <string_view>

#include "runtime/common/status.h"
#include "runtime/snapshot/snapshot_key.h"

namespace kp::snapshot {

struct ClientOptions {
  std::string token;
  int64_t timeout_ms = 30'000;  // per call
};

struct Fetched {
  Key key;
  std::string bytes;
};

class SnapshotClient {
 public:
  SnapshotClient(const std::string& address, ClientOptions options);
  ~SnapshotClient();
  const std::string& address() const { return address_; }
  absl::Status Put(const Key& key, std::string_view image);
  // NOT_FOUND when the agent does not hold it; DATA_LOSS naming the cause
  // when the bytes do not match their header or the header another key.
  absl::StatusOr<Fetched> Get(const std::string& job_id, int rank, int64_t step);

 private:
  struct Stub;
  std::string address_;
  ClientOptions options_;
  std::unique_ptr<Stub> stub_;
};

}  // namespace kp::snapshot

#endif  // KP_RUNTIME_SNAPSHOT_SNAPSHOT_CLIENT_H_
