#include "runtime/worker/resume_check.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/comm/reduce_values.h"

namespace kp::worker {
namespace {

constexpr char kLr[] = "resume.lr";
constexpr char kOptimizerStep[] = "resume.optimizer_step";

absl::Status Mismatch(const std::string& dir, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("resume check failed for ", dir, ": ", what,
                                                 " (refusing to train on a resume that differs from the "
                                                 "run that saved the checkpoint)"));
}

}  // namespace

void RecordResumePoint(const ResumePoint& point, ckpt::CheckpointState* state) {
  state->step = point.step;
  state->data_position = point.data_position;
  if (!point.cpu_rng.empty()) state->rng["cpu"] = point.cpu_rng;
  // %.17g round-trips a double exactly.
  state->extra[kLr] = absl::StrFormat("%.17g", point.learning_rate);
  if (point.optimizer_step) state->extra[kOptimizerStep] = std::to_string(*point.optimizer_step);
}

absl::Status CheckResume(const std::string& dir, const ckpt::CheckpointState& recorded,
                         const ResumePoint& restored, bool check_learning_rate) {
  const std::string dir_name = std::filesystem::path(dir).filename().string();
  if (dir_name.rfind("step_", 0) == 0 && dir_name != ckpt::CheckpointManager::StepDirName(recorded.step)) {
    return Mismatch(dir, absl::StrCat("step: state.json records step ", recorded.step, " but the directory is ",
                                      dir_name));
  }
  if (restored.step != recorded.step) {
    return Mismatch(dir, absl::StrCat("step: resuming at ", restored.step, ", the checkpoint recorded ",
                                      recorded.step));
  }
  if (restored.data_position != recorded.data_position) {
    return Mismatch(dir, absl::StrCat("data_position: the sampler resumes at global sample ",
                                      restored.data_position, ", the checkpoint recorded ",
                                      recorded.data_position, " (global batch changed?)"));
  }
  if (auto it = recorded.extra.find(kLr); check_learning_rate && it != recorded.extra.end()) {
    char* end = nullptr;
    const double lr = std::strtod(it->second.c_str(), &end);
    if (end == it->second.c_str() || *end != '\0' || !std::isfinite(lr)) {
      return Mismatch(dir, "learning_rate: recorded value '" + it->second + "' is not a number");
    }
    // Both sides come from the same schedule function: equal up to rounding.
    if (std::abs(lr - restored.learning_rate) > 1e-12 * std::max(std::abs(lr), 1e-30)) {
      return Mismatch(dir, absl::StrFormat("learning_rate: %.17g at step %d after resume, the checkpoint "
                                           "recorded %.17g (schedule changed? kp-train "
                                           "--allow_schedule_change accepts that)",
                                           restored.learning_rate, restored.step, lr));
    }
  }
  if (auto it = recorded.rng.find("cpu"); it != recorded.rng.end() && it->second != restored.cpu_rng) {
    return Mismatch(dir, absl::StrCat("rng: the restored CPU generator state (", restored.cpu_rng.size(),
                                      " bytes) differs from the recorded one (", it->second.size(), " bytes)"));
  }
  if (auto it = recorded.extra.find(kOptimizerStep); it != recorded.extra.end()) {
    const std::string have = restored.optimizer_step ? std::to_string(*restored.optimizer_step) : "none";
    if (have != it->second) {
      return Mismatch(dir, "optimizer_step: the restored optimizer has taken " + have +
                               " steps, the checkpoint recorded " + it->second);
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSameResumeStep(comm::Communicator& comm, int64_t step, c10::Device device) {
  KP_ASSIGN_OR_RETURN(const comm::ValueRange steps, comm::AllReduceRange(comm, step, device));
  if (!steps.AllEqual()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the ranks resume from different steps (", steps.lowest, " to ", steps.highest, "; rank ", comm.rank(),
        " at ", step,
        "): a checkpoint that loads on some ranks only; refusing to train with ranks out of step"));
  }
  return absl::OkStatus();
}

std::optional<int64_t> OptimizerStep(const std::map<std::string, at::Tensor>& state_dict) {
  std::optional<int64_t> out;
  constexpr std::string_view kSuffix = ".step";
  for (const auto& [name, t] : state_dict) {
    if (name.size() < kSuffix.size() || name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0 ||
        !t.defined() || t.numel() != 1) {
      continue;
    }
    const int64_t v = static_cast<int64_t>(t.to(at::kCPU).to(at::kDouble).item<double>());
    out = out ? std::max(*out, v) : v;
  }
  return out;
}

}  // namespace kp::worker
