// Rank 0 tells the other ranks where its coordinator listens by writing one
// file on a shared filesystem; the others poll it. The file holds the job key
// with the address, so a file left by an earlier mpirun is never taken for
// this one's (when the launcher gives no key, a stale file can be: remove it
// between runs, or give --coordinator).
#ifndef KP_LAUNCHER_MPI_RENDEZVOUS_FILE_H_
#define KP_LAUNCHER_MPI_RENDEZVOUS_FILE_H_

#include <cstdint>
#include <string>

#include "runtime/common/clock.h"
#include "runtime/common/status.h"

namespace kp::launcher {

// Atomically writes "kp-coordinator <job_key> <target>\n" to `path`.
absl::Status PublishCoordinator(const std::string& path, const std::string& job_key,
                                const std::string& target);

// Polls `path` every `poll_micros` until it names `job_key`, then returns its
// target. DEADLINE_EXCEEDED after `timeout_micros`, naming the file and what
// to check.
absl::StatusOr<std::string> AwaitCoordinator(const std::string& path, const std::string& job_key,
                                             int64_t timeout_micros, Clock& clock,
                                             int64_t poll_micros = 100'000);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_MPI_RENDEZVOUS_FILE_H_
