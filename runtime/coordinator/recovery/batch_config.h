// The job's config YAML as the recovery policy sees it: the batch shape
// (training.micro_batch, training.grad_accum) to keep the global batch fixed
// when dp shrinks, and the rewrite that gives the next generation its new
// parallel.dp and batch shape. Only inline configs (JobSpec.config_yaml)
// can be rewritten; a config_path lives on the agents' disks.
#ifndef KP_RUNTIME_COORDINATOR_RECOVERY_BATCH_CONFIG_H_
#define KP_RUNTIME_COORDINATOR_RECOVERY_BATCH_CONFIG_H_

#include <string>

#include "runtime/common/status.h"
#include "runtime/coordinator/recovery/recovery_policy.h"

namespace kp::coordinator::recovery {

// training.micro_batch (required) and training.grad_accum (default 1);
// INVALID_ARGUMENT naming the field when missing or not a positive integer.
absl::StatusOr<BatchShape> ReadBatchShape(const std::string& config_yaml);

// The same YAML with parallel.dp, training.micro_batch and training.grad_accum
// replaced (comments and key order are not kept).
absl::StatusOr<std::string> RewriteForLayout(const std::string& config_yaml, int dp, const BatchShape& batch);

}  // namespace kp::coordinator::recovery

#endif  // KP_RUNTIME_COORDINATOR_RECOVERY_BATCH_CONFIG_H_
