// Measures this rank's own step time around the training loop's seams: the
// clock starts when the loop asks for a step's first micro-batch and stops
// when it calls GradientSync::Finish (the wait for the gradient all-reduce),
// whose duration is the communication wait. One JSON line per step goes to
// the step-time file (step_time_file.h).
//
// On CPU the compute time is exact. On CUDA kernels run asynchronously:
// the `fence` (CurrentStreamFence) waits for the compute stream before the
// clock stops. It does not wait for the communicator's stream, so gradient
// all-reduces already launched during backward are not counted as compute.
//
// TEST ONLY: `slow_down` sleeps at the start of every step (from
// KP_TEST_SLOW_RANK), to make a straggler on demand.
#ifndef KP_RUNTIME_WORKER_STEP_TIME_STEP_TIMER_H_
#define KP_RUNTIME_WORKER_STEP_TIME_STEP_TIMER_H_

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <c10/core/Device.h>

#include "runtime/common/status.h"
#include "runtime/engine/train_loop.h"
#include "runtime/worker/step_time/step_time_file.h"

namespace kp::worker::step_time {

struct StepTimerOptions {
  // Where the lines go; empty = measure only (last() still works).
  std::string path;
  int rank = 0;
  std::chrono::milliseconds slow_down{0};
  // Waits for the rank's queued compute before the clock stops (CUDA).
  std::function<void()> fence;
};

// Waits for the work queued on `device`'s current stream (the compute, not
// a communicator's own stream). Null on CPU, where nothing is queued.
std::function<void()> CurrentStreamFence(const c10::Device& device);

class StepTimer {
 public:
  // Wraps `batches` and `sync` (not owned; they outlive the timer).
  static absl::StatusOr<std::unique_ptr<StepTimer>> Create(engine::BatchSource* batches,
                                                            engine::GradientSync* sync,
                                                            StepTimerOptions options);
  ~StepTimer();
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;

  // Hand these to the loop in place of the wrapped ones.
  engine::BatchSource* batches() { return &batches_; }
  engine::GradientSync* sync() { return &sync_; }

  // The newest step measured.
  std::optional<StepTime> last() const { return last_; }

 private:
  using Clock = std::chrono::steady_clock;
  class TimedBatches final : public engine::BatchSource {
   public:
    explicit TimedBatches(StepTimer* t) : t_(t) {}
    absl::StatusOr<at::Tensor> Batch(int64_t step, int micro_step) override;

   private:
    StepTimer* t_;
  };
  class TimedSync final : public engine::GradientSync {
   public:
    explicit TimedSync(StepTimer* t) : t_(t) {}
    void PrepareForBackward(bool last_micro_step) override;
    absl::Status Finish() override;

   private:
    StepTimer* t_;
  };

  StepTimer(engine::BatchSource* batches, engine::GradientSync* sync, StepTimerOptions options)
      : inner_batches_(batches), inner_sync_(sync), options_(std::move(options)), batches_(this), sync_(this) {}

  engine::BatchSource* inner_batches_;
  engine::GradientSync* inner_sync_;
  StepTimerOptions options_;
  TimedBatches batches_;
  TimedSync sync_;
  std::FILE* out_ = nullptr;
  int64_t step_ = -1;
  Clock::time_point step_start_;
  std::optional<StepTime> last_;
};

}  // namespace kp::worker::step_time

#endif  // KP_RUNTIME_WORKER_STEP_TIME_STEP_TIMER_H_
