// Fixtures shared by the tests that call RunTraining in-process on CPU
// (run_training_test, resume_check_test, snapshot's run_training_snapshot_test).
#ifndef KP_RUNTIME_WORKER_RUN_TRAINING_TEST_UTIL_H_
#define KP_RUNTIME_WORKER_RUN_TRAINING_TEST_UTIL_H_

#include <string>

#include "runtime/engine/config.h"
#include "runtime/worker/run_training.h"

namespace kp::worker::testing {

// An empty directory $TEST_TMPDIR/<name> (or /tmp/<name>), wiped first.
std::string FreshTempDir(const std::string& name);

// configs/tiny.yaml shrunk so a run takes seconds: d_model 32, 2 layers,
// ffn 64, seq 32, micro_batch 4, grad_accum 2, 8 steps (2 warm-up), a
// checkpoint and a log line every 4 steps, a 64K-token corpus. Tests change
// what they need on top.
engine::Config SmallTinyConfig();

// One CPU thread, device cpu, everything under run_dir.
RunOptions CpuRunOptions(const std::string& run_dir);

}  // namespace kp::worker::testing

#endif  // KP_RUNTIME_WORKER_RUN_TRAINING_TEST_UTIL_H_
