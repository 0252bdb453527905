// Files that are never left half-written, and paths that never escape their
// root. Checkpoints, the coordinator's state and job specs all go through here.
#ifndef KP_RUNTIME_COMMON_FILES_H_
#define KP_RUNTIME_COMMON_FILES_H_

#include <string>
#include <string_view>

#include "runtime/common/status.h"

namespace kp {

// Writes `contents` to a temporary file beside `path`, fsyncs it, renames it
// over `path` and fsyncs the directory: readers see the old file or the new
// one, never a mix, even across a crash.
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents);

// Renames a finished temporary file into place durably (rename + dir fsync).
absl::Status CommitFile(const std::string& tmp_path, const std::string& path);

absl::StatusOr<std::string> ReadFile(const std::string& path);

// Resolves `relative` under `root` and fails if the result (after resolving
// "..", symlinks in existing components) leaves `root`. Absolute inputs are
// accepted only when they lie under `root`.
absl::StatusOr<std::string> ResolveUnderRoot(const std::string& root, const std::string& relative);

// mkdir -p.
absl::Status MakeDirs(const std::string& path);

}  // namespace kp

#endif  // KP_RUNTIME_COMMON_FILES_H_
