#include "runtime/comm/store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/common/files.h"

namespace kp::comm {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status KeysTimeout(const std::vector<std::string>& keys, std::chrono::milliseconds timeout,
                         const std::string& where) {
  return absl::DeadlineExceededError(absl::StrCat("store ", where, ": keys [",
                                                  absl::StrJoin(keys, ", "),
                                                  "] not set within ", timeout.count(), " ms"));
}

}  // namespace

absl::Status InMemoryStore::Set(const std::string& key, const std::string& value) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    data_[key] = value;
  }
  cv_.notify_all();
  return absl::OkStatus();
}

absl::StatusOr<std::string> InMemoryStore::Get(const std::string& key,
                                               std::chrono::milliseconds timeout) {
  KP_RETURN_IF_ERROR(Wait({key}, timeout));
  std::lock_guard<std::mutex> lock(mu_);
  return data_.at(key);
}

absl::Status InMemoryStore::Wait(const std::vector<std::string>& keys,
                                 std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const bool ok = cv_.wait_for(lock, timeout, [&] {
    for (const auto& k : keys) {
      if (!data_.count(k)) return false;
    }
    return true;
  });
  if (!ok) return KeysTimeout(keys, timeout, "in-memory");
  return absl::OkStatus();
}

absl::StatusOr<int64_t> InMemoryStore::Add(const std::string& key, int64_t delta) {
  int64_t value = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = data_.find(key);
    if (it != data_.end() && !absl::SimpleAtoi(it->second, &value)) {
      return absl::InvalidArgumentError(absl::StrCat("store key ", key, " is not a counter"));
    }
    value += delta;
    data_[key] = absl::StrCat(value);
  }
  cv_.notify_all();
  return value;
}

FileStore::FileStore(std::string directory, std::chrono::milliseconds poll)
    : dir_(std::move(directory)), poll_(poll) {}

std::string FileStore::PathOf(const std::string& key) const {
  // Escape everything but [A-Za-z0-9_-] so any key maps to one flat file name
  // (no '/' subdirectories, no "." or ".." surprises).
  std::string name;
  for (unsigned char c : key) {
    if (std::isalnum(c) || c == '_' || c == '-') {
      name.push_back(static_cast<char>(c));
    } else {
      static const char* kHex = "0123456789abcdef";
      name.push_back('.');
      name.push_back(kHex[c >> 4]);
      name.push_back(kHex[c & 15]);
    }
  }
  return dir_ + "/k" + name;
}

absl::Status FileStore::Set(const std::string& key, const std::string& value) {
  KP_RETURN_IF_ERROR(MakeDirs(dir_));
  return WriteFileAtomically(PathOf(key), value);
}

absl::StatusOr<std::string> FileStore::Get(const std::string& key,
                                           std::chrono::milliseconds timeout) {
  KP_RETURN_IF_ERROR(Wait({key}, timeout));
  return ReadFile(PathOf(key));
}

absl::Status FileStore::Wait(const std::vector<std::string>& keys,
                             std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  size_t next = 0;  // keys before `next` are known to exist
  while (true) {
    while (next < keys.size() && ::access(PathOf(keys[next]).c_str(), F_OK) == 0) ++next;
    if (next == keys.size()) return absl::OkStatus();
    if (Clock::now() >= deadline) return KeysTimeout(keys, timeout, "file " + dir_);
    std::this_thread::sleep_for(poll_);
  }
}

absl::StatusOr<int64_t> FileStore::Add(const std::string& key, int64_t delta) {
  KP_RETURN_IF_ERROR(MakeDirs(dir_));
  const std::string lock_path = dir_ + "/.lock";
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("open ", lock_path, ": ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("flock ", lock_path, ": ", std::strerror(err)));
  }
  absl::StatusOr<int64_t> result = [&]() -> absl::StatusOr<int64_t> {
    int64_t value = 0;
    const std::string path = PathOf(key);
    if (::access(path.c_str(), F_OK) == 0) {
      KP_ASSIGN_OR_RETURN(std::string old, ReadFile(path));
      if (!absl::SimpleAtoi(old, &value)) {
        return absl::InvalidArgumentError(
            absl::StrCat("store key ", key, " in ", dir_, " is not a counter"));
      }
    }
    value += delta;
    KP_RETURN_IF_ERROR(WriteFileAtomically(path, absl::StrCat(value)));
    return value;
  }();
  ::flock(fd, LOCK_UN);
  ::close(fd);
  return result;
}

absl::Status PrefixStore::Wait(const std::vector<std::string>& keys,
                               std::chrono::milliseconds timeout) {
  std::vector<std::string> full;
  full.reserve(keys.size());
  for (const auto& k : keys) full.push_back(prefix_ + k);
  return base_->Wait(full, timeout);
}

}  // namespace kp::comm
