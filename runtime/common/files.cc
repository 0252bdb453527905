#include "runtime/common/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace kp {
namespace {

namespace fs = std::filesystem;

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(what + " " + path + ": " + std::strerror(errno));
}

absl::Status FsyncPath(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) return ErrnoError("open", path);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoError("fsync", path);
  return absl::OkStatus();
}

}  // namespace

absl::Status CommitFile(const std::string& tmp_path, const std::string& path) {
  KP_RETURN_IF_ERROR(FsyncPath(tmp_path, O_RDONLY));
  if (::rename(tmp_path.c_str(), path.c_str()) != 0) return ErrnoError("rename to", path);
  std::string dir = fs::path(path).parent_path().string();
  return FsyncPath(dir.empty() ? "." : dir, O_RDONLY | O_DIRECTORY);
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view contents) {
  std::random_device rd;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rd());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return ErrnoError("create", tmp);
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status s = ErrnoError("write", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return ErrnoError("close", tmp);
  }
  absl::Status s = CommitFile(tmp, path);
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open " + path + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError("read failed: " + path);
  return ss.str();
}

absl::StatusOr<std::string> ResolveUnderRoot(const std::string& root, const std::string& relative) {
  if (root.empty()) return absl::InvalidArgumentError("empty root directory");
  std::error_code ec;
  fs::path base = fs::weakly_canonical(fs::absolute(root), ec);
  if (ec) return absl::InvalidArgumentError("bad root " + root + ": " + ec.message());
  fs::path p = fs::path(relative);
  fs::path joined = p.is_absolute() ? p : base / p;
  fs::path resolved = fs::weakly_canonical(joined, ec);
  if (ec) return absl::InvalidArgumentError("bad path " + relative + ": " + ec.message());
  auto [root_end, _] = std::mismatch(base.begin(), base.end(), resolved.begin(), resolved.end());
  if (root_end != base.end()) {
    return absl::PermissionDeniedError("path " + relative + " escapes its root " + base.string());
  }
  return resolved.string();
}

absl::Status MakeDirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return absl::InternalError("mkdir " + path + ": " + ec.message());
  return absl::OkStatus();
}

}  // namespace kp
