// Validated resume: the values a restarted run derives after loading a
// checkpoint (next step, data position, learning rate, CPU RNG state,
// optimizer step count) must equal what the run that saved it recorded.
// A mismatch (a tampered or hand-edited state.json, a config whose schedule
// or batch changed under the run, a restore that silently did not happen)
// stops the worker before its first step with an error naming the field;
// INVALID_ARGUMENT, so kp-train exits 2 and the coordinator does not retry.
#ifndef KP_RUNTIME_WORKER_RESUME_CHECK_H_
#define KP_RUNTIME_WORKER_RESUME_CHECK_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

#include "runtime/comm/communicator.h"
#include "runtime/common/status.h"
#include "runtime/engine/checkpoint/checkpoint_manager.h"

namespace kp::worker {

struct ResumePoint {
  int64_t step = 0;           // the next optimizer step to run
  int64_t data_position = 0;  // global samples consumed before it (step x global batch)
  double learning_rate = 0;   // the schedule's value at `step`
  std::string cpu_rng;        // ATen's default CPU generator state; empty: not recorded
  std::optional<int64_t> optimizer_step;  // AdamW's step count; none before the first update
};

// Saves `point` into a checkpoint's state: step and data_position fields,
// rng["cpu"], extra["resume.lr"] and extra["resume.optimizer_step"].
void RecordResumePoint(const ResumePoint& point, ckpt::CheckpointState* state);

// OK when `restored` agrees with what `recorded` (loaded from
// checkpoint_dir) holds; fields an older checkpoint did not record are not
// checked. INVALID_ARGUMENT "resume check failed for <dir>: <field>: ...".
// check_learning_rate = false: a schedule change the caller allowed.
absl::Status CheckResume(const std::string& checkpoint_dir, const ckpt::CheckpointState& recorded,
                         const ResumePoint& restored, bool check_learning_rate = true);

// Every rank picks the newest checkpoint that loads *for it*; a part that
// one rank cannot read would start the ranks at different steps. OK when all
// ranks of `comm` pass the same `step` (a MAX all-reduce of (step, -step) on
// `device`); else FAILED_PRECONDITION naming the range (exit 1: a restart
// may see a consistent set).
absl::Status CheckSameResumeStep(comm::Communicator& comm, int64_t step, c10::Device device);

// The largest "<param>.step" of an optimizer state dict; none if it has none.
std::optional<int64_t> OptimizerStep(const std::map<std::string, at::Tensor>& state_dict);

}  // namespace kp::worker

#endif  // KP_RUNTIME_WORKER_RESUME_CHECK_H_
