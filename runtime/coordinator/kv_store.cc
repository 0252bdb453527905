#include "runtime/coordinator/kv_store.h"

namespace kp::coordinator {

absl::Status KvStore::Set(const std::string& key, const std::string& value) {
  if (key.empty() || key.size() > kMaxKeyBytes) return absl::InvalidArgumentError("key: must be 1 to 512 bytes");
  if (value.size() > kMaxValueBytes) return absl::InvalidArgumentError("value: larger than 64 KiB for key " + key);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (kv_.size() >= kMaxKeys && kv_.find(key) == kv_.end()) {
      return absl::ResourceExhaustedError("rendezvous store is full");
    }
    kv_[key] = value;
  }
  cv_.notify_all();
  return absl::OkStatus();
}

absl::StatusOr<std::string> KvStore::Get(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = kv_.find(key);
  if (it == kv_.end()) return absl::NotFoundError("no key " + key);
  return it->second;
}

absl::StatusOr<std::vector<std::string>> KvStore::Wait(const std::vector<std::string>& keys,
                                                       std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  std::string missing;
  auto ready = [&] {
    if (shutdown_) return true;
    for (const auto& k : keys) {
      if (kv_.find(k) == kv_.end()) {
        missing = k;
        return false;
      }
    }
    return true;
  };
  if (!cv_.wait_for(lock, timeout, ready)) return absl::DeadlineExceededError("rendezvous key " + missing + " not set");
  if (shutdown_) return absl::CancelledError("coordinator shutting down");
  std::vector<std::string> out;
  for (const auto& k : keys) out.push_back(kv_[k]);
  return out;
}

void KvStore::ErasePrefix(const std::string& prefix) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = kv_.lower_bound(prefix); it != kv_.end() && it->first.compare(0, prefix.size(), prefix) == 0;) {
    it = kv_.erase(it);
  }
}

void KvStore::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_ = true;
  }
  cv_.notify_all();
}

}  // namespace kp::coordinator
