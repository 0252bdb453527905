// Rendezvous: the small key/value space where ranks meet before they can talk
// to each other (addresses, NCCL unique ids, split colors). Values are opaque
// bytes; keys are written once per rendezvous (set overwrites). Kept narrow so
// a coordinator-backed store over gRPC can implement it later.
#ifndef KP_RUNTIME_COMM_STORE_H_
#define KP_RUNTIME_COMM_STORE_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/common/status.h"

namespace kp::comm {

class Store {
 public:
  virtual ~Store() = default;

  virtual absl::Status Set(const std::string& key, const std::string& value) = 0;
  // Waits up to `timeout` for the key; DEADLINE_EXCEEDED names the key.
  virtual absl::StatusOr<std::string> Get(const std::string& key,
                                          std::chrono::milliseconds timeout) = 0;
  // Waits up to `timeout` until every key exists.
  virtual absl::Status Wait(const std::vector<std::string>& keys,
                            std::chrono::milliseconds timeout) = 0;
  // Adds `delta` to the integer counter at `key` (missing = 0) atomically
  // across all clients and returns the new value.
  virtual absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) = 0;
};

// One process: tests and the in-process fake backend.
class InMemoryStore final : public Store {
 public:
  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::string> Get(const std::string& key,
                                  std::chrono::milliseconds timeout) override;
  absl::Status Wait(const std::vector<std::string>& keys,
                    std::chrono::milliseconds timeout) override;
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) override;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> data_;
};

// A directory: one file per key, written atomically (temp + rename), so
// readers never see half a value. Works across processes on one host and on
// shared filesystems (NFS, Lustre) without a server. Add() serialises through
// an flock()ed lock file. Keys may hold any characters; they are escaped into
// file names.
class FileStore final : public Store {
 public:
  explicit FileStore(std::string directory,
                     std::chrono::milliseconds poll = std::chrono::milliseconds(2));
  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::string> Get(const std::string& key,
                                  std::chrono::milliseconds timeout) override;
  absl::Status Wait(const std::vector<std::string>& keys,
                    std::chrono::milliseconds timeout) override;
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) override;

  const std::string& directory() const { return dir_; }

 private:
  std::string PathOf(const std::string& key) const;

  std::string dir_;
  std::chrono::milliseconds poll_;
};

// Namespaces every key under "<prefix>/" of an underlying store (not owned):
// sub-communicators and generations rendezvous without colliding.
class PrefixStore final : public Store {
 public:
  PrefixStore(std::string prefix, Store* base) : prefix_(std::move(prefix) + "/"), base_(base) {}
  absl::Status Set(const std::string& key, const std::string& value) override {
    return base_->Set(prefix_ + key, value);
  }
  absl::StatusOr<std::string> Get(const std::string& key,
                                  std::chrono::milliseconds timeout) override {
    return base_->Get(prefix_ + key, timeout);
  }
  absl::Status Wait(const std::vector<std::string>& keys,
                    std::chrono::milliseconds timeout) override;
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) override {
    return base_->Add(prefix_ + key, delta);
  }

 private:
  std::string prefix_;
  Store* base_;
};

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_STORE_H_
