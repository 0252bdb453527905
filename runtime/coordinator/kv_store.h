// The rendezvous key-value store behind the Rendezvous service: rank 0 of a
// job sets the NCCL unique id (or Gloo's keys), the other ranks wait for it.
// In memory on purpose: a rendezvous belongs to one generation of one job, and
// after a coordinator restart the workers of that generation form a new one.
#ifndef KP_RUNTIME_COORDINATOR_KV_STORE_H_
#define KP_RUNTIME_COORDINATOR_KV_STORE_H_

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/common/status.h"

namespace kp::coordinator {

class KvStore {
 public:
  static constexpr size_t kMaxKeyBytes = 512;
  static constexpr size_t kMaxValueBytes = 64 << 10;
  static constexpr size_t kMaxKeys = 1 << 20;

  absl::Status Set(const std::string& key, const std::string& value);
  absl::StatusOr<std::string> Get(const std::string& key);  // NOT_FOUND when absent
  // Waits (real time) until every key exists; DEADLINE_EXCEEDED names a
  // missing key. CANCELLED after Shutdown().
  absl::StatusOr<std::vector<std::string>> Wait(const std::vector<std::string>& keys,
                                                std::chrono::milliseconds timeout);
  // Drops every key under `prefix` (a job generation that ended).
  void ErasePrefix(const std::string& prefix);
  void Shutdown();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> kv_;
  bool shutdown_ = false;
};

}  // namespace kp::coordinator

#endif  // KP_RUNTIME_COORDINATOR_KV_STORE_H_
