#include "launcher/mpi/rendezvous_file.h"

#include <sstream>

#include "absl/strings/str_cat.h"
#include "runtime/common/files.h"

namespace kp::launcher {
namespace {

constexpr char kMagic[] = "kp-coordinator";

}  // namespace

absl::Status PublishCoordinator(const std::string& path, const std::string& job_key,
                                const std::string& target) {
  if (job_key.find_first_of(" \n") != std::string::npos ||
      target.find_first_of(" \n") != std::string::npos || target.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous: job key '", job_key, "' or target '", target,
                     "' is empty or has spaces"));
  }
  return WriteFileAtomically(path, absl::StrCat(kMagic, " ", job_key.empty() ? "-" : job_key,
                                                " ", target, "\n"));
}

absl::StatusOr<std::string> AwaitCoordinator(const std::string& path, const std::string& job_key,
                                             int64_t timeout_micros, Clock& clock,
                                             int64_t poll_micros) {
  const std::string want_key = job_key.empty() ? "-" : job_key;
  const int64_t deadline = clock.NowMicros() + timeout_micros;
  std::string last_seen;
  while (true) {
    auto text = ReadFile(path);
    if (text.ok()) {
      std::istringstream in(*text);
      std::string magic, key, target;
      in >> magic >> key >> target;
      if (magic == kMagic && key == want_key && !target.empty()) return target;
      last_seen = magic == kMagic ? absl::StrCat(" (it names job '", key, "')") : " (not ours)";
    }
    if (clock.NowMicros() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "rank 0 did not publish its coordinator address for job '", want_key, "' in ", path,
          last_seen, " within ", timeout_micros / 1'000'000,
          " s: check that rank 0 started (its log), and that the file lies on a filesystem "
          "every host shares"));
    }
    clock.SleepMicros(poll_micros);
  }
}

}  // namespace kp::launcher
