#include "runtime/worker/step_time/step_timer.h"

#include <cerrno>
#include <cstring>
#include <thread>

#include <c10/core/impl/VirtualGuardImpl.h>

namespace kp::worker::step_time {

std::function<void()> CurrentStreamFence(const c10::Device& device) {
  if (device.is_cpu()) return nullptr;
  return [device] {
    // Through c10's device-generic guard: CUDA's comes with libtorch_cuda,
    // so this library needs no CUDA headers.
    c10::impl::VirtualGuardImpl impl(device.type());
    impl.synchronizeStream(impl.getStream(device));
  };
}

absl::StatusOr<std::unique_ptr<StepTimer>> StepTimer::Create(engine::BatchSource* batches,
                                                              engine::GradientSync* sync,
                                                              StepTimerOptions options) {
  std::unique_ptr<StepTimer> t(new StepTimer(batches, sync, std::move(options)));
  if (!t->options_.path.empty()) {
    // Truncated: a file left by an earlier worker of the same rank would
    // report stale times (the agent's tail starts over when a file shrinks).
    t->out_ = std::fopen(t->options_.path.c_str(), "w");
    if (t->out_ == nullptr) {
      return absl::InvalidArgumentError("cannot open step-time file " + t->options_.path + ": " +
                                        std::strerror(errno));
    }
  }
  return t;
}

StepTimer::~StepTimer() {
  if (out_ != nullptr) std::fclose(out_);
}

absl::StatusOr<at::Tensor> StepTimer::TimedBatches::Batch(int64_t step, int micro_step) {
  if (micro_step == 0) {
    t_->step_ = step;
    t_->step_start_ = Clock::now();
    if (t_->options_.slow_down.count() > 0) std::this_thread::sleep_for(t_->options_.slow_down);
  }
  return t_->inner_batches_->Batch(step, micro_step);
}

void StepTimer::TimedSync::PrepareForBackward(bool last_micro_step) {
  t_->inner_sync_->PrepareForBackward(last_micro_step);
}

absl::Status StepTimer::TimedSync::Finish() {
  if (t_->options_.fence) t_->options_.fence();
  const Clock::time_point computed = Clock::now();
  absl::Status st = t_->inner_sync_->Finish();
  const Clock::time_point synced = Clock::now();
  if (t_->step_ < 0) return st;  // Finish without a batch: nothing to time
  StepTime s;
  s.step = t_->step_;
  s.rank = t_->options_.rank;
  s.compute_s = std::chrono::duration<double>(computed - t_->step_start_).count();
  s.comm_wait_s = std::chrono::duration<double>(synced - computed).count();
  t_->last_ = s;
  if (t_->out_ != nullptr) {
    // One write per line, flushed: the agent reads whole lines only.
    const std::string line = FormatStepTime(s) + "\n";
    std::fwrite(line.data(), 1, line.size(), t_->out_);
    std::fflush(t_->out_);
  }
  return st;
}

}  // namespace kp::worker::step_time
