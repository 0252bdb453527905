// For tests of libtorch code: an agent's snapshot store and service on
// 127.0.0.1, behind a header free of gRPC and protobuf types (libtorch's
// bundled protobuf headers shadow the system ones).
#ifndef KP_RUNTIME_SNAPSHOT_LOOPBACK_AGENT_H_
#define KP_RUNTIME_SNAPSHOT_LOOPBACK_AGENT_H_

#include <memory>
#include <string>
#include <vector>

#include "runtime/common/status.h"
#include "runtime/snapshot/snapshot_key.h"

namespace kp::snapshot {

class LoopbackAgent {
 public:
  static absl::StatusOr<std::unique_ptr<LoopbackAgent>> Start(const std::string& token);
  ~LoopbackAgent();
  const std::string& address() const { return address_; }
  std::vector<Key> Held() const;
  // Stores `bytes` under `key` directly (a correct size and checksum).
  absl::Status StoreRaw(const Key& key, const std::string& bytes);
  absl::StatusOr<std::string> Image(const Key& key) const;

 private:
  struct Impl;
  LoopbackAgent() = default;
  std::unique_ptr<Impl> impl_;
  std::string address_;
};

}  // namespace kp::snapshot

#endif  // KP_RUNTIME_SNAPSHOT_LOOPBACK_AGENT_H_
