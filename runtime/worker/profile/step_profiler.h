// Profiles a window of training steps [first, last) and writes a trace
// (Chrome trace JSON, readable by bench/profile_breakdown.py, Perfetto or
// chrome://tracing). It decorates the loop's BatchSource, like
// fault/step_boundary_stop.h: the loop asks for (step, micro 0) exactly once
// at the start of every step, so starting there and stopping at (last, 0)
// covers whole steps, optimizer and metrics included, without touching the
// loop itself.
#ifndef KP_RUNTIME_WORKER_PROFILE_STEP_PROFILER_H_
#define KP_RUNTIME_WORKER_PROFILE_STEP_PROFILER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/common/status.h"
#include "runtime/engine/train_loop.h"

namespace kp::worker::profile {

// The seam to the profiler (kineto in kp-train; a fake in tests).
class TraceRecorder {
 public:
  virtual ~TraceRecorder() = default;
  virtual absl::Status Start() = 0;
  // Stops and writes the trace to `path`.
  virtual absl::Status StopAndSave(const std::string& path) = 0;
};

// libtorch's kineto profiler: CPU ops and, when `cuda`, CUDA kernels and
// memcpys (CUPTI).
std::unique_ptr<TraceRecorder> MakeKinetoRecorder(bool cuda);

struct StepWindow {
  int64_t first = 0;  // first profiled step
  int64_t last = 0;   // one past the last profiled step
};

// "A:B" (steps A..B-1) or "A" (step A alone); errors name the text.
absl::StatusOr<StepWindow> ParseStepWindow(const std::string& text);

class ProfiledBatches final : public engine::BatchSource {
 public:
  ProfiledBatches(engine::BatchSource* inner, StepWindow window, std::unique_ptr<TraceRecorder> recorder,
                  std::string trace_path);
  ~ProfiledBatches() override;

  absl::StatusOr<at::Tensor> Batch(int64_t step, int micro_step) override;

  // Stops a window the run ended inside (end_step < window.last) and writes
  // its trace; a no-op otherwise. Call after the loop.
  absl::Status Finish();

  bool recording() const { return recording_; }
  bool saved() const { return saved_; }

 private:
  engine::BatchSource* inner_;
  StepWindow window_;
  std::unique_ptr<TraceRecorder> recorder_;
  std::string trace_path_;
  bool recording_ = false;
  bool saved_ = false;
};

}  // namespace kp::worker::profile

#endif  // KP_RUNTIME_WORKER_PROFILE_STEP_PROFILER_H_
