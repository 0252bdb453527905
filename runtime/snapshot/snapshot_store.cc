#include "runtime/snapshot/snapshot_store.h"

#include "absl/strings/str_cat.h"
#include "runtime/snapshot/checksum.h"

namespace kp::snapshot {
namespace {

std::string Describe(const v1::SnapshotKey& k) {
  return absl::StrCat("snapshot of job ", k.job_id(), " rank ", k.rank(), " step ", k.step(), " (generation ",
                      k.generation(), ")");
}

}  // namespace

SnapshotStore::SnapshotStore(StoreOptions options) : options_(options) {
  if (options_.keep_per_rank < 1) options_.keep_per_rank = 1;
}

absl::Status SnapshotStore::Put(const v1::SnapshotHeader& header, std::string bytes) {
  const v1::SnapshotKey& k = header.key();
  if (k.job_id().empty() || k.rank() < 0 || k.step() < 0 || k.world_size() <= k.rank()) {
    return absl::InvalidArgumentError("snapshot key needs a job, 0 <= rank < world_size and step >= 0: " +
                                      k.ShortDebugString());
  }
  if (static_cast<int64_t>(bytes.size()) != header.total_bytes()) {
    return absl::DataLossError(absl::StrCat(Describe(k), ": got ", bytes.size(), " bytes, header says ",
                                            header.total_bytes()));
  }
  if (Checksum(bytes) != header.checksum()) return absl::DataLossError(Describe(k) + ": checksum mismatch");
  const int64_t size = static_cast<int64_t>(bytes.size());
  if (size > options_.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(Describe(k), " has ", size, " bytes, over the agent's bound of ",
                                                     options_.max_bytes, " (--snapshot_max_bytes)"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  const RankKey rk{k.job_id(), k.rank()};
  const Order order{k.generation(), k.step()};
  auto& kept = held_[rk];
  if (static_cast<int>(kept.size()) >= options_.keep_per_rank && !kept.count(order) && order < kept.begin()->first) {
    return absl::FailedPreconditionError(Describe(k) + " is older than every snapshot kept of its rank");
  }
  auto it = kept.find(order);
  if (it != kept.end()) {
    bytes_ -= static_cast<int64_t>(it->second.bytes->size());
    kept.erase(it);
  }
  StoredSnapshot s;
  s.header = header;
  s.bytes = std::make_shared<const std::string>(std::move(bytes));
  kept.emplace(order, std::move(s));
  bytes_ += size;
  while (static_cast<int>(kept.size()) > options_.keep_per_rank) {
    bytes_ -= static_cast<int64_t>(kept.begin()->second.bytes->size());
    kept.erase(kept.begin());
  }
  EvictLocked(rk, order);
  if (bytes_ > options_.max_bytes) {
    // Only newer snapshots of other ranks are left: keep them, drop this one.
    auto& mine = held_[rk];
    bytes_ -= size;
    mine.erase(order);
    if (mine.empty()) held_.erase(rk);
    return absl::ResourceExhaustedError(absl::StrCat(Describe(k), ": the agent's ", options_.max_bytes,
                                                     " bytes (--snapshot_max_bytes) are held by newer snapshots"));
  }
  return absl::OkStatus();
}

void SnapshotStore::EvictLocked(const RankKey& protect_rank, const Order& protect) {
  while (bytes_ > options_.max_bytes) {
    // The victim: a rank's older snapshot before any rank's newest; among
    // those, the lowest (generation, step). Never the one just stored.
    const RankKey* victim_rank = nullptr;
    Order victim{};
    bool victim_is_newest = true;
    for (const auto& [rk, kept] : held_) {
      for (auto it = kept.begin(); it != kept.end(); ++it) {
        if (rk == protect_rank && it->first == protect) continue;
        const bool newest = std::next(it) == kept.end();
        if (victim_rank == nullptr || (victim_is_newest && !newest) ||
            (victim_is_newest == newest && it->first < victim)) {
          victim_rank = &rk;
          victim = it->first;
          victim_is_newest = newest;
        }
      }
    }
    if (victim_rank == nullptr) return;
    // Only an older snapshot than the one stored may make room for it.
    if (victim_is_newest && !(victim < protect)) return;
    auto& kept = held_[*victim_rank];
    bytes_ -= static_cast<int64_t>(kept.at(victim).bytes->size());
    kept.erase(victim);
    if (kept.empty()) held_.erase(*victim_rank);
  }
}

absl::StatusOr<StoredSnapshot> SnapshotStore::Get(const std::string& job_id, int rank, int64_t step) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = held_.find({job_id, rank});
  if (it != held_.end()) {
    // Newest generation first: a step re-run by a later generation supersedes.
    for (auto s = it->second.rbegin(); s != it->second.rend(); ++s) {
      if (std::get<1>(s->first) == step) return s->second;
    }
  }
  return absl::NotFoundError(absl::StrCat("no snapshot of job ", job_id, " rank ", rank, " step ", step));
}

std::vector<v1::SnapshotHolding> SnapshotStore::Holdings() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::SnapshotHolding> out;
  for (const auto& [rk, kept] : held_) {
    for (const auto& [order, s] : kept) {
      v1::SnapshotHolding h;
      *h.mutable_key() = s.header.key();
      h.set_bytes(static_cast<int64_t>(s.bytes->size()));
      out.push_back(std::move(h));
    }
  }
  return out;
}

void SnapshotStore::RetainJobs(const std::set<std::string>& jobs) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = held_.begin(); it != held_.end();) {
    if (jobs.count(it->first.first)) {
      ++it;
      continue;
    }
    for (const auto& [o, s] : it->second) bytes_ -= static_cast<int64_t>(s.bytes->size());
    it = held_.erase(it);
  }
}

int64_t SnapshotStore::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

}  // namespace kp::snapshot
