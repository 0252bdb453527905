// One training run from a Config: builds the device, model, optimizer, data,
// data-parallel sync and checkpoints, optionally resumes, and runs the loop.
// kp-train's main() is a thin flag parser over RunTraining; tests call it
// in-process.
#ifndef KP_RUNTIME_WORKER_RUN_TRAINING_H_
#define KP_RUNTIME_WORKER_RUN_TRAINING_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "runtime/comm/communicator.h"
#include "runtime/common/status.h"
#include "runtime/engine/config.h"
#include "runtime/engine/linear.h"
#include "runtime/engine/train_loop.h"
#include "runtime/snapshot/worker_snapshots.h"

namespace kp::worker {

// Tests: this rank reads samples [first_sample, first_sample + count) of the
// global stream for (step, micro-step).
using BatchHook =
    std::function<void(int64_t step, int micro, int64_t first_sample, int64_t count)>;

struct RunOptions {
  // Checkpoints (run_dir/checkpoints), the generated corpus cache
  // (run_dir/corpus) and, by default, metrics (run_dir/metrics.jsonl).
  std::string run_dir;
  std::optional<int64_t> steps;  // overrides training.steps
  std::string device = "auto";   // cpu | cuda | auto
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  // A directory the ranks share for a file-store rendezvous (world_size > 1).
  std::string rendezvous;
  std::string metrics_jsonl;  // default run_dir/metrics.jsonl (rank 0 only)
  bool resume = false;        // from the newest complete checkpoint in run_dir
  // With resume: accept a learning-rate schedule other than the one the
  // checkpoint was saved under (training.steps, lr or warmup changed on
  // purpose); the resume check (resume_check.h) then skips the learning rate.
  bool allow_schedule_change = false;
  // CPU intra-op threads. 1 by default: with several ranks or a busy host,
  // OpenMP's spinning workers made a tiny run 10x slower (measured on a
  // loaded 2-core machine); raise it on an idle many-core host. 0: libtorch's
  // default (one per core).
  int threads = 1;
  // End the run after this many steps as if interrupted (the schedule still
  // follows training.steps): tests of resume, and of what a crash leaves.
  std::optional<int64_t> stop_after_steps;
  // Set (from any thread) to stop at the next step boundary with a
  // checkpoint; the run then returns CANCELLED (fault/step_boundary_stop.h).
  // kp-train points it at its SIGTERM handler's flag.
  const std::atomic<bool>* stop_flag = nullptr;
  // Timeout of every collective of the communicator formed here (a hung
  // peer ends the run with DEADLINE_EXCEEDED, exit code 75); 0: the
  // backend's default (5 minutes).
  int64_t comm_timeout_ms = 0;
  // "nccl" or "gloo"; empty: nccl on CUDA, gloo on CPU. gloo on CUDA copies
  // every transfer through host memory (comm/host_staged.h): several ranks
  // on one GPU, as separate processes, for checking multi-rank logic there.
  std::string comm_backend;
  // Profile steps [profile_steps) ("A:B" or "A"; empty: off) and write a
  // Chrome trace to profile_trace (worker/profile/step_profiler.h).
  std::string profile_steps;
  std::string profile_trace;
  // Linear implementations by precision; null: fp32 + bf16 dense.
  const engine::LinearRegistry* linear_registry = nullptr;
  // An already-formed data-parallel group (in-process tests with the fake
  // backend); null: one is formed through `rendezvous` when world_size > 1.
  comm::Communicator* communicator = nullptr;
  // In-memory snapshots on agents (kp-train --snapshot_every,
  // --snapshot_target, --resume_snapshot; runtime/snapshot/).
  snapshot::WorkerSnapshotOptions snapshot;
  // Tests only: the context-parallel parity self-check runs with a
  // deliberately broken LSE merge, proving that a job whose CP attention
  // disagrees with single-rank attention refuses to start.
  bool break_cp_merge_for_test = false;
  // Tests only: called before every batch (in-process shrink tests record
  // the samples each rank consumed, and end a rank there).
  BatchHook on_batch;
};

// Errors name their cause: a bad config value, a missing or corrupt data
// file, a data vocabulary larger than the model's, a checkpoint whose shapes
// do not match the model, a non-finite loss under nan_policy stop.
absl::StatusOr<engine::TrainResult> RunTraining(const engine::Config& config,
                                                const RunOptions& options);

}  // namespace kp::worker

#endif  // KP_RUNTIME_WORKER_RUN_TRAINING_H_
