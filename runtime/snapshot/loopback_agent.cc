#include "runtime/snapshot/loopback_agent.h"

#include "runtime/snapshot/checksum.h"
#include "runtime/snapshot/snapshot_service.h"
#include "runtime/snapshot/snapshot_store.h"

namespace kp::snapshot {

struct LoopbackAgent::Impl {
  SnapshotStore store;
  std::unique_ptr<SnapshotServer> server;
};

absl::StatusOr<std::unique_ptr<LoopbackAgent>> LoopbackAgent::Start(const std::string& token) {
  std::unique_ptr<LoopbackAgent> a(new LoopbackAgent());
  a->impl_ = std::make_unique<Impl>();
  KP_ASSIGN_OR_RETURN(a->impl_->server, SnapshotServer::Start("127.0.0.1:0", &a->impl_->store, token));
  a->address_ = "127.0.0.1:" + std::to_string(a->impl_->server->port());
  return a;
}

LoopbackAgent::~LoopbackAgent() = default;

std::vector<Key> LoopbackAgent::Held() const {
  std::vector<Key> out;
  for (const auto& h : impl_->store.Holdings()) {
    const auto& k = h.key();
    out.push_back(Key{k.job_id(), k.rank(), k.step(), k.generation(), k.world_size()});
  }
  return out;
}

absl::Status LoopbackAgent::StoreRaw(const Key& key, const std::string& bytes) {
  v1::SnapshotHeader h;
  h.mutable_key()->set_job_id(key.job_id);
  h.mutable_key()->set_rank(key.rank);
  h.mutable_key()->set_step(key.step);
  h.mutable_key()->set_generation(key.generation);
  h.mutable_key()->set_world_size(key.world_size);
  h.set_total_bytes(static_cast<int64_t>(bytes.size()));
  h.set_checksum(Checksum(bytes));
  return impl_->store.Put(h, bytes);
}

absl::StatusOr<std::string> LoopbackAgent::Image(const Key& key) const {
  KP_ASSIGN_OR_RETURN(StoredSnapshot s, impl_->store.Get(key.job_id, key.rank, key.step));
  return *s.bytes;
}

}  // namespace kp::snapshot
