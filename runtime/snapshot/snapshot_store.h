// An agent's in-memory snapshots: per (job, rank) the newest `keep_per_rank`
// complete images, ordered by (generation, step), all together at most
// `max_bytes`. Images arrive whole (the service assembles a Put stream and
// checks its size and checksum first), so what the store holds is always
// complete. Jobs the coordinator no longer lists are dropped (RetainJobs).
// Thread-safe: the gRPC service writes, the heartbeat reads.
#ifndef KP_RUNTIME_SNAPSHOT_SNAPSHOT_STORE_H_
#define KP_RUNTIME_SNAPSHOT_SNAPSHOT_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "kp/v1/snapshot.pb.h"
#include "runtime/common/status.h"

namespace kp::snapshot {

struct StoreOptions {
  int64_t max_bytes = int64_t{4} << 30;
  // Two, so that a newest snapshot whose peer copy of another rank was lost
  // mid-transfer still leaves a complete set one snapshot older.
  int keep_per_rank = 2;
};

struct StoredSnapshot {
  v1::SnapshotHeader header;
  std::shared_ptr<const std::string> bytes;
};

class SnapshotStore {
 public:
  explicit SnapshotStore(StoreOptions options = {});

  // Keeps `bytes` (which must match header.total_bytes and header.checksum:
  // DATA_LOSS otherwise). RESOURCE_EXHAUSTED when it alone exceeds
  // max_bytes, or would only fit by evicting newer snapshots;
  // FAILED_PRECONDITION when older than every kept one of its rank (and
  // keep_per_rank are kept). Evicts the oldest snapshots first: older
  // snapshots of any rank before any rank's newest.
  absl::Status Put(const v1::SnapshotHeader& header, std::string bytes);
  // NOT_FOUND naming the key when not held.
  absl::StatusOr<StoredSnapshot> Get(const std::string& job_id, int rank, int64_t step) const;
  std::vector<v1::SnapshotHolding> Holdings() const;
  // Drops every snapshot of a job not in `jobs`.
  void RetainJobs(const std::set<std::string>& jobs);
  int64_t bytes() const;

 private:
  using RankKey = std::pair<std::string, int>;          // job, rank
  using Order = std::tuple<int64_t, int64_t>;           // generation, step
  void EvictLocked(const RankKey& protect_rank, const Order& protect);

  StoreOptions options_;
  mutable std::mutex mu_;
  std::map<RankKey, std::map<Order, StoredSnapshot>> held_;
  int64_t bytes_ = 0;
};

}  // namespace kp::snapshot

#endif  // KP_RUNTIME_SNAPSHOT_SNAPSHOT_STORE_H_
