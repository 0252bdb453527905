// Stops a training run at a step boundary, with a checkpoint, when asked
// (StopSignal). It decorates the loop's BatchSource: the loop asks for
// (step, micro 0) exactly once at the start of every step, after the
// previous step's optimizer update, on every rank in the same order, which
// makes it the one place where (a) every rank can agree to stop at the same
// step (a 1-element MAX all-reduce of the stop flag: SIGTERM reaches ranks at
// different moments, and a rank that stops alone leaves its peers blocked in
// the next gradient all-reduce), and (b) the state of "steps < step done"
// can be saved. The run then ends with CANCELLED, which kp-train turns into
// exit code 0 (exit_codes.h).
#ifndef KP_RUNTIME_WORKER_FAULT_STEP_BOUNDARY_STOP_H_
#define KP_RUNTIME_WORKER_FAULT_STEP_BOUNDARY_STOP_H_

#include <atomic>
#include <functional>
#include <optional>

#include "runtime/comm/communicator.h"
#include "runtime/engine/train_loop.h"

namespace kp::worker::fault {

class StopAtStepBoundary final : public engine::BatchSource {
 public:
  // `checkpoint(step)` saves the state before `step` and returns once it is
  // durable (rank 0 writes; other ranks may pass a no-op). `agree` (may be
  // null for one rank) is the data-parallel group.
  StopAtStepBoundary(engine::BatchSource* inner, const std::atomic<bool>* stop, comm::Communicator* agree,
                     int64_t start_step, std::function<absl::Status(int64_t step)> checkpoint);

  absl::StatusOr<at::Tensor> Batch(int64_t step, int micro_step) override;

  // The step the run stopped before, once it has.
  std::optional<int64_t> stopped_at() const { return stopped_at_; }

 private:
  absl::StatusOr<bool> AnyRankStopping();

  engine::BatchSource* inner_;
  const std::atomic<bool>* stop_;
  comm::Communicator* agree_;
  int64_t start_step_;
  std::function<absl::Status(int64_t)> checkpoint_;
  std::optional<int64_t> stopped_at_;
};

}  // namespace kp::worker::fault

#endif  // KP_RUNTIME_WORKER_FAULT_STEP_BOUNDARY_STOP_H_
