#include "runtime/worker/profile/step_profiler.h"

#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/engine/log.h"

namespace kp::worker::profile {

absl::StatusOr<StepWindow> ParseStepWindow(const std::string& text) {
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t colon = text.find(':', start);
    parts.push_back(text.substr(start, colon == std::string::npos ? std::string::npos : colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  StepWindow w;
  auto bad = [&text](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("--profile_steps '", text, "': ", why, " (expected A:B, steps A..B-1, or A)"));
  };
  if (parts.empty() || parts.size() > 2) return bad("wrong number of fields");
  if (!absl::SimpleAtoi(parts[0], &w.first)) return bad("first step is not an integer");
  if (parts.size() == 1) {
    w.last = w.first + 1;
  } else if (!absl::SimpleAtoi(parts[1], &w.last)) {
    return bad("last step is not an integer");
  }
  if (w.first < 0) return bad("first step is negative");
  if (w.last <= w.first) return bad("the window is empty");
  return w;
}

ProfiledBatches::ProfiledBatches(engine::BatchSource* inner, StepWindow window,
                                 std::unique_ptr<TraceRecorder> recorder, std::string trace_path)
    : inner_(inner), window_(window), recorder_(std::move(recorder)), trace_path_(std::move(trace_path)) {}

ProfiledBatches::~ProfiledBatches() {
  absl::Status s = Finish();
  if (!s.ok()) engine::LogWarning(absl::StrCat("profile: ", s.message()));
}

absl::StatusOr<at::Tensor> ProfiledBatches::Batch(int64_t step, int micro_step) {
  if (micro_step == 0) {
    if (recording_ && step >= window_.last) KP_RETURN_IF_ERROR(Finish());
    if (!recording_ && !saved_ && step >= window_.first && step < window_.last) {
      KP_RETURN_IF_ERROR(recorder_->Start());
      recording_ = true;
      engine::LogInfo(absl::StrCat("profile: recording steps ", step, "..", window_.last - 1));
    }
  }
  return inner_->Batch(step, micro_step);
}

absl::Status ProfiledBatches::Finish() {
  if (!recording_) return absl::OkStatus();
  recording_ = false;
  saved_ = true;
  KP_RETURN_IF_ERROR(recorder_->StopAndSave(trace_path_));
  engine::LogInfo(absl::StrCat("profile: trace written to ", trace_path_));
  return absl::OkStatus();
}

}  // namespace kp::worker::profile
