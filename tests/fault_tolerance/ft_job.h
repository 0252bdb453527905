// The job the fault-tolerance tests run: a tiny model on the built-in
// corpus, dp = 2 on CPU through Gloo, a checkpoint every 5 steps, about a
// second of training per 10 steps on 2 cores.
#ifndef KP_TESTS_FAULT_TOLERANCE_FT_JOB_H_
#define KP_TESTS_FAULT_TOLERANCE_FT_JOB_H_

#include <string>

#include "kp/v1/job.pb.h"

namespace kp::ft {

inline constexpr int kSteps = 80;
inline constexpr int kCheckpointEvery = 5;
inline constexpr int kMicroBatch = 4;
inline constexpr int kDp = 2;
inline constexpr int kGlobalBatch = kMicroBatch * kDp;  // grad_accum 1

std::string JobConfig();
// Elastic with 2 restarts; `min_dp` sets the kp.min_dp label when > 0.
v1::JobSpec JobSpec(const std::string& name, int min_dp = 0, int steps = kSteps);

}  // namespace kp::ft

#endif  // KP_TESTS_FAULT_TOLERANCE_FT_JOB_H_
