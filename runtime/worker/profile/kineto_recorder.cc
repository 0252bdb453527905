// Kept apart from step_profiler.cc: the kineto headers are heavy and only
// kp-train needs them.
#include <set>

#include <torch/csrc/autograd/profiler_kineto.h>

#include "absl/strings/str_cat.h"
#include "runtime/worker/profile/step_profiler.h"

namespace kp::worker::profile {
namespace {

namespace prof = torch::profiler::impl;

class KinetoRecorder final : public TraceRecorder {
 public:
  explicit KinetoRecorder(bool cuda) {
    activities_.insert(prof::ActivityType::CPU);
    if (cuda) activities_.insert(prof::ActivityType::CUDA);
  }

  absl::Status Start() override {
    try {
      const prof::ProfilerConfig config(prof::ProfilerState::KINETO);
      torch::autograd::profiler::prepareProfiler(config, activities_);
      torch::autograd::profiler::enableProfiler(config, activities_);
    } catch (const std::exception& e) {
      return absl::FailedPreconditionError(absl::StrCat("cannot start the kineto profiler: ", e.what()));
    }
    return absl::OkStatus();
  }

  absl::Status StopAndSave(const std::string& path) override {
    try {
      auto result = torch::autograd::profiler::disableProfiler();
      if (!result) return absl::InternalError("the kineto profiler returned no result");
      result->save(path);
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("cannot save the profile to ", path, ": ", e.what()));
    }
    return absl::OkStatus();
  }

 private:
  std::set<prof::ActivityType> activities_;
};

}  // namespace

std::unique_ptr<TraceRecorder> MakeKinetoRecorder(bool cuda) {
  return std::make_unique<KinetoRecorder>(cuda);
}

}  // namespace kp::worker::profile
