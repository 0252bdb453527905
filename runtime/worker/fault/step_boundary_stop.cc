#include "runtime/worker/fault/step_boundary_stop.h"

#include "absl/strings/str_cat.h"
#include "runtime/comm/log.h"
#include "runtime/comm/reduce_values.h"

namespace kp::worker::fault {

StopAtStepBoundary::StopAtStepBoundary(engine::BatchSource* inner, const std::atomic<bool>* stop,
                                       comm::Communicator* agree, int64_t start_step,
                                       std::function<absl::Status(int64_t)> checkpoint)
    : inner_(inner), stop_(stop), agree_(agree), start_step_(start_step), checkpoint_(std::move(checkpoint)) {}

absl::StatusOr<bool> StopAtStepBoundary::AnyRankStopping() {
  const bool local = stop_ != nullptr && stop_->load();
  return comm::AnyRank(agree_, local, c10::kCPU);
}

absl::StatusOr<at::Tensor> StopAtStepBoundary::Batch(int64_t step, int micro_step) {
  if (micro_step == 0) {
    KP_ASSIGN_OR_RETURN(bool stopping, AnyRankStopping());
    if (stopping) {
      stopped_at_ = step;
      if (step > start_step_) {
        KP_RETURN_IF_ERROR(checkpoint_(step));
        comm::LogInfo(absl::StrCat("stopped before step ", step, ": checkpoint saved; a resume continues there"));
        return absl::CancelledError(absl::StrCat("stop requested: checkpoint saved before step ", step));
      }
      comm::LogInfo(absl::StrCat("stopped before step ", step, ": nothing new to checkpoint"));
      return absl::CancelledError(absl::StrCat("stop requested before step ", step, " (no new step to save)"));
    }
  }
  return inner_->Batch(step, micro_step);
}

}  // namespace kp::worker::fault
