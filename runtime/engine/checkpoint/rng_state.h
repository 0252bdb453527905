// Generator states as bytes, for CheckpointState::rng: a resumed run draws
// the same random numbers (init, dropout) as the uninterrupted one.
#ifndef KP_RUNTIME_ENGINE_CHECKPOINT_RNG_STATE_H_
#define KP_RUNTIME_ENGINE_CHECKPOINT_RNG_STATE_H_

#include <string>

#include "runtime/common/status.h"

namespace kp::ckpt {

// ATen's default CPU generator.
std::string CaptureCpuRngState();
// INVALID_ARGUMENT if `bytes` is not a state CaptureCpuRngState produced.
absl::Status RestoreCpuRngState(const std::string& bytes);

}  // namespace kp::ckpt

#endif  // KP_RUNTIME_ENGINE_CHECKPOINT_RNG_STATE_H_
