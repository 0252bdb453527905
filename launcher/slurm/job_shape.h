// The little a launcher must know about a job before anything starts: how
// many ranks (dp x cp) it wants, so an allocation that is too small fails in
// a second instead of after every daemon has started and the job has queued
// forever.
#ifndef KP_LAUNCHER_SLURM_JOB_SHAPE_H_
#define KP_LAUNCHER_SLURM_JOB_SHAPE_H_

#include <cstdint>
#include <string>

#include "runtime/common/status.h"

namespace kp::launcher {

struct JobShape {
  int64_t dp = 1;
  int64_t cp = 1;
  // The job may run on CPU slots when GPUs are short (JobSpec.cpu_fallback).
  bool cpu_fallback = false;
  // The job file's `name:` (empty when absent); names rendered objects.
  std::string name;

  int64_t world() const { return dp * cp; }
};

// Reads dp and cp from a job file: top-level `dp:`/`cp:` (a job spec), else
// `parallel: {dp, cp}` (a training config); 1 when absent. `source` names
// the file in errors.
absl::StatusOr<JobShape> ParseJobShape(const std::string& yaml_text, const std::string& source);
absl::StatusOr<JobShape> LoadJobShape(const std::string& path);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_SLURM_JOB_SHAPE_H_
