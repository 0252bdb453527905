// The training loop, readable top to bottom (train_loop.cc, TrainLoop):
//   for step: lr schedule -> for each micro-step: batch -> forward/backward
//   -> gradient sync (data parallel) -> NaN check (skip or stop) -> clip
//   -> optimizer step -> metrics -> periodic checkpoint.
// It talks to the rest of the system through the small interfaces below, so
// it runs the same in a test (in-memory batches, no-op sync) and in kp-train
// (the sampler, the data-parallel reducer, the checkpoint manager).
#ifndef KP_RUNTIME_ENGINE_TRAIN_LOOP_H_
#define KP_RUNTIME_ENGINE_TRAIN_LOOP_H_

#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/common/status.h"
#include "runtime/engine/config.h"
#include "runtime/engine/metrics.h"
#include "runtime/engine/model.h"
#include "runtime/engine/optimizer.h"

namespace kp::engine {

// This rank's tokens for (step, micro_step): int64 [micro_batch, seq_len + 1]
// (inputs are [:, :-1], targets [:, 1:]), on any device. Must be a pure
// function of its arguments so a resumed run sees the same data.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual absl::StatusOr<at::Tensor> Batch(int64_t step, int micro_step) = 0;
};

// Makes gradients agree across data-parallel ranks. The default does nothing
// (one process). The data-parallel reducer (runtime/parallel/) overlaps its
// all-reduce with backward: PrepareForBackward arms it before each
// micro-step's backward; Finish waits for it after the last one.
class GradientSync {
 public:
  virtual ~GradientSync() = default;
  virtual void PrepareForBackward(bool last_micro_step) {}
  virtual absl::Status Finish() { return absl::OkStatus(); }
};

// Saves the state after optimizer step next_step - 1 (so a resumed run
// starts at next_step). Called only with finite parameters.
class CheckpointSink {
 public:
  virtual ~CheckpointSink() = default;
  virtual absl::Status Save(int64_t next_step, Transformer& model, Optimizer& optimizer) = 0;
};

// Who reads which share of a step's fixed global batch: micro_batch *
// grad_accum * dp_world samples per step, whatever dp_world is.
struct DpLayout {
  int dp_rank = 0;
  int dp_world = 1;
  int64_t micro_batch = 0;
  int64_t grad_accum = 1;
};

// In-process recovery from a dead data-parallel peer (optional). When a step
// fails before its optimizer update (its gradient sync, or another
// collective of the step), the loop asks Recover(); it either re-forms the
// group over the survivors, points the BatchSource at this rank's new share,
// and returns the layout to redo the step with (gradients are zeroed and the
// step runs again from the state the rank still holds), or returns the error
// that ends the run (normally `error` itself, annotated).
class DpRecovery {
 public:
  virtual ~DpRecovery() = default;
  virtual absl::StatusOr<DpLayout> Recover(int64_t step, const absl::Status& error) = 0;
};

struct TrainLoopOptions {
  int64_t start_step = 0;  // first step to run (> 0 after a resume)
  int64_t end_step = 0;    // one past the last step
  c10::Device device = c10::kCPU;
  int dp_world = 1;         // data-parallel replicas: tokens/s counts all of them
  // Context parallelism: this rank holds the zigzag shard cp_rank of every
  // sequence (the model's Attention must be the CP one over the cp group).
  int cp_rank = 0;
  int cp_size = 1;
  double peak_flops = 0;    // per device; 0: MFU reported as 0 (devices = dp * cp)
  DpRecovery* recovery = nullptr;  // not owned; null: a failed step ends the run
  // The step's loss averaged over every rank holding part of the global batch
  // (dp replicas and the cp shards of each sequence: equal token counts, so
  // the mean of their means is the global mean). Null: this rank's own loss,
  // which under cp > 1 is the loss of its shard alone. The NaN policy and the
  // metrics then see the same number on every rank. Called after the
  // gradient sync, before any weight changes: an error here is a failed step
  // that `recovery` may redo, as for the sync itself.
  std::function<absl::StatusOr<double>(double)> mean_loss_across_ranks;
};

struct TrainResult {
  int64_t next_step = 0;     // where a resume would continue
  std::vector<double> losses;  // per step run (NaN for skipped steps)
  int64_t skipped_steps = 0;
  int64_t recoveries = 0;      // steps redone after an in-process re-formation
  double final_loss = 0;       // mean loss of the last min(10, steps) finite steps
  double mean_tokens_per_s = 0;  // excluding the first step (warm-up)
  // The data's entropy rate in nats/token when known (the built-in corpus;
  // filled by RunTraining), else 0: the loss a perfect model reaches.
  double entropy_rate = 0;
};

absl::StatusOr<TrainResult> TrainLoop(const Config& config, Transformer& model,
                                      Optimizer& optimizer, BatchSource& data,
                                      GradientSync& sync, CheckpointSink* checkpoints,
                                      MetricsSink& metrics, const TrainLoopOptions& options);

}  // namespace kp::engine

#endif  // KP_RUNTIME_ENGINE_TRAIN_LOOP_H_
