// kprun's job files: YAML that becomes a kp.v1.JobSpec.
//
//   name: tiny
//   config: configs/tiny.yaml   # read by kprun and sent inline; or
//   # config_path: tiny.yaml    # resolved by the cluster under --config_root; or
//   # model: {...}              # an inline mapping, sent as YAML text
//   data: shards/train          # under the data root; omit for the built-in corpus
//   dp: 2
//   cp: 1
//   cp_mode: ring               # ring | allgather | ulysses | zigzag
//   precision: bf16             # fp32 | bf16 | fp8
//   steps: 100
//   checkpoint: {dir: tiny, every_steps: 50, keep_last: 2, resume: true}
//   priority: 0
//   elastic: false
//   max_restarts: 0
//   min_dp: 1                   # elastic floor: shrink dp down to this after a fault
//   in_process_shrink: false    # survivors re-form in-process (docs/FAULT_TOLERANCE.md)
//   cpu_fallback: true
//   labels: {team: research}
//
// Unknown keys are errors (a typo must not silently change a run).
#ifndef KP_LAUNCHER_JOB_FILE_H_
#define KP_LAUNCHER_JOB_FILE_H_

#include <string>

#include "kp/v1/job.pb.h"
#include "runtime/common/status.h"

namespace kp::launcher {

// `base_dir` resolves a relative `config:` when it is not found from the
// current directory (usually the job file's directory).
absl::StatusOr<v1::JobSpec> ParseJobYaml(const std::string& yaml, const std::string& base_dir);
absl::StatusOr<v1::JobSpec> LoadJobFile(const std::string& path);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_JOB_FILE_H_
