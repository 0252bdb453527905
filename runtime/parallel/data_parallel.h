// Data parallelism: every dp rank holds a full replica and computes gradients
// on its own slice of the global batch; GradientReducer averages them over the
// data-parallel communicator while the backward pass is still running.
//
// Parameters are packed into buckets of about `bucket_bytes` in the reverse of
// their registration order (roughly the order autograd produces their
// gradients). A post-hook on each parameter's gradient accumulator copies the
// finished gradient into its bucket; when a bucket is full its AllReduce(avg)
// starts on the communicator's worker, overlapping the rest of backward.
// Buckets are launched strictly in index order on every rank, so collectives
// match across ranks even when gradients arrive in different orders.
//
// Use per optimizer step:
//   reducer.PrepareForBackward(/*last_micro_step=*/i == n - 1);
//   loss.backward();
//   ... after the last micro-step:
//   KP_RETURN_IF_ERROR(reducer.Finish());   // .grad now holds the dp average
//   optimizer.step();
// With gradient accumulation, earlier micro-steps only accumulate into .grad
// locally; the reduction runs once, on the last micro-step.
#ifndef KP_RUNTIME_PARALLEL_DATA_PARALLEL_H_
#define KP_RUNTIME_PARALLEL_DATA_PARALLEL_H_

#include <cstdint>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/comm/communicator.h"
#include "runtime/comm/shrink.h"
#include "runtime/common/status.h"

namespace torch::autograd {
struct Node;
}  // namespace torch::autograd

namespace kp::parallel {

class GradientReducer {
 public:
  // `comm` is the data-parallel group (not owned; outlives the reducer).
  // `params` are leaf tensors with requires_grad, all on one device and of one
  // dtype per bucket (a bucket never mixes dtypes). bucket_bytes == 0 puts
  // every parameter in its own bucket.
  GradientReducer(comm::Communicator* comm, std::vector<at::Tensor> params,
                  size_t bucket_bytes = 25u << 20);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Copies rank `root`'s parameter values to every rank (call once after
  // construction so all replicas start equal).
  absl::Status BroadcastParameters(int root = 0);

  // Arms the hooks for the coming backward. With last_micro_step == false the
  // backward only accumulates locally and Finish() is not needed.
  void PrepareForBackward(bool last_micro_step);

  // Launches buckets whose gradients never arrived (unused parameters count
  // as zero), waits for every bucket and writes the averages into .grad.
  absl::Status Finish();

  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  // Parameter indices (into `params`) of bucket b, in bucket order.
  const std::vector<int>& bucket_params(int b) const { return buckets_[b].params; }

  // For tests and metrics: how many buckets of the last reduction started
  // from inside backward (before Finish was called), and when each started.
  int buckets_launched_in_backward() const { return launched_in_backward_; }
  std::vector<std::chrono::steady_clock::time_point> bucket_launch_times() const;

 private:
  struct Bucket {
    std::vector<int> params;       // indices into params_
    std::vector<int64_t> offsets;  // element offset of each param in flat
    at::Tensor flat;               // contiguous gradient buffer
    int pending = 0;               // gradients still missing this step
    bool launched = false;
    std::unique_ptr<comm::Work> work;
    std::chrono::steady_clock::time_point launch_time;
  };

  void OnGradReady(int param_index);
  // Starts every ready bucket from next_to_launch_ on; mu_ held.
  void LaunchReadyLocked(bool from_backward);

  comm::Communicator* comm_;
  std::vector<at::Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;     // param index -> bucket
  std::vector<int> slot_of_;       // param index -> position within bucket
  std::vector<bool> ready_;        // param index -> grad arrived this step
  std::vector<std::pair<std::shared_ptr<torch::autograd::Node>, uintptr_t>> hooks_;  // accumulator, key

  mutable std::mutex mu_;
  bool armed_ = false;
  bool finishing_ = false;
  int next_to_launch_ = 0;
  int launched_in_backward_ = 0;
};

// This rank's share of a fixed global batch of micro_batch * grad_accum *
// dp_world samples per step (mirrors engine::DpLayout; the engine is not a
// dependency of this library).
struct DpShare {
  int dp_rank = 0;
  int dp_world = 1;
  int64_t micro_batch = 0;
  int64_t grad_accum = 1;
};

// The layout of a fixed global batch over dp_world ranks: the configured
// micro-batch if it divides the per-rank share, else the largest one below
// it that does (more micro-steps, the same samples per step).
// INVALID_ARGUMENT when global_batch is not a multiple of dp_world.
absl::StatusOr<DpShare> LayoutForWorld(int64_t global_batch, int64_t micro_batch,
                                                int dp_rank, int dp_world);

struct ShrinkRecoveryOptions {
  int64_t global_batch = 0;  // samples per optimizer step, all ranks together
  int64_t micro_batch = 0;   // the configured one (kept when it still divides)
  comm::AgreeOptions agree;  // window: see comm/shrink.h
  int min_dp = 1;            // fewer survivors: the restart path
  // ZeRO-1: every rank holds only its shard of the optimizer state, and the
  // dead rank's shard is gone with it; in-process shrink is refused.
  bool sharded_optimizer_state = false;
  // Compared across the survivors after the re-formation (their replicas
  // must be identical; one that finished the failed step's all-reduce and
  // updated its weights cannot go back).
  std::vector<at::Tensor> params;
  // Around the re-formation: e.g. stop a hang guard first; then point the
  // data at this rank's new share and re-arm the guard. Either may be empty.
  std::function<void()> before_reform;
  std::function<absl::Status(const DpShare&)> after_reform;
};

// The recovery behind engine::DpRecovery for fault.in_process_shrink (the
// worker adapts it): on a communicator error
// (DEADLINE_EXCEEDED, UNAVAILABLE, ABORTED) the survivors agree, shrink `comm`
// in place, check that they all stand before the same step with the same
// weights, and hand the loop the new layout of the same global batch. Any
// other error, or a refusal (ZeRO-1, too few survivors, disagreement), ends
// the run with the original error's code and a message naming why, so the
// restart path takes over exactly as without this option.
class ShrinkRecovery {
 public:
  // `comm` (not owned) is the data-parallel group the reducer uses.
  ShrinkRecovery(comm::ReformableCommunicator* comm, ShrinkRecoveryOptions options);
  absl::StatusOr<DpShare> Recover(int64_t step, const absl::Status& error);

 private:
  absl::Status CheckSurvivorsAgree(int64_t step);

  comm::ReformableCommunicator* comm_;
  ShrinkRecoveryOptions options_;
};

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_DATA_PARALLEL_H_
