// A worker started by kp-agent stops when its agent dies: the kernel sends
// it `signal` (SIGTERM: StopSignal then stops at a step boundary with a
// checkpoint) instead of leaving an orphan that keeps training, writing
// checkpoints and holding its device while a new generation starts.
#ifndef KP_RUNTIME_WORKER_FAULT_PARENT_DEATH_H_
#define KP_RUNTIME_WORKER_FAULT_PARENT_DEATH_H_

#include <signal.h>

#include "runtime/common/status.h"

namespace kp::worker::fault {

// prctl(PR_SET_PDEATHSIG, signal); if the parent is already gone (the
// parent changed since `expected_parent`, when given > 0), raises `signal`
// at once.
absl::Status SignalWhenParentDies(int signal = SIGTERM, pid_t expected_parent = 0);

}  // namespace kp::worker::fault

#endif  // KP_RUNTIME_WORKER_FAULT_PARENT_DEATH_H_
