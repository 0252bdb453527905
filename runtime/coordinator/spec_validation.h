// Checks a JobSpec before the coordinator accepts it. Errors are
// INVALID_ARGUMENT (PERMISSION_DENIED for a path that leaves its root) and
// start with the offending field ("spec.dp: ..."), so a user can fix the
// job file without reading code.
#ifndef KP_RUNTIME_COORDINATOR_SPEC_VALIDATION_H_
#define KP_RUNTIME_COORDINATOR_SPEC_VALIDATION_H_

#include <string>

#include "kp/v1/job.pb.h"
#include "runtime/common/status.h"

namespace kp::coordinator {

// Directories the paths of a spec are relative to. An empty root means paths
// of that kind are refused.
struct SpecRoots {
  std::string config_root;
  std::string data_root;
  std::string checkpoint_root;
};

inline constexpr int kMaxWorldSize = 4096;
inline constexpr size_t kMaxConfigYamlBytes = 1 << 20;

absl::Status ValidateJobSpec(const v1::JobSpec& spec, const SpecRoots& roots);

}  // namespace kp::coordinator

#endif  // KP_RUNTIME_COORDINATOR_SPEC_VALIDATION_H_
