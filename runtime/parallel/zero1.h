// ZeRO stage 1: AdamW whose state (exp_avg, exp_avg_sq) is sharded across the
// data-parallel ranks. The parameters are viewed as one flat vector padded to
// a multiple of the dp size; rank r owns elements [r*S, (r+1)*S). Each step,
// every rank updates only its shard (from the dp-averaged gradients that
// GradientReducer::Finish left in .grad), then an AllGather hands every rank
// the full updated parameters. Optimizer memory per rank drops from 2N to
// 2N/dp floats; the update equals torch::optim::AdamW's.
#ifndef KP_RUNTIME_PARALLEL_ZERO1_H_
#define KP_RUNTIME_PARALLEL_ZERO1_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/comm/communicator.h"
#include "runtime/common/status.h"

namespace kp::parallel {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

class ShardedAdamW {
 public:
  // `params`: one dtype and device. `decay[i]` says whether weight decay
  // applies to params[i] (empty: all decay), for decay/no-decay groups.
  ShardedAdamW(comm::Communicator* dp, std::vector<at::Tensor> params, AdamWOptions options,
               std::vector<bool> decay = {});

  // One AdamW step with learning rate `lr` (schedules change it per step).
  absl::Status Step(double lr);
  absl::Status Step() { return Step(options_.lr); }

  // This rank's shard, for checkpoints: [shard_begin, shard_begin + numel)
  // of the flat parameter vector (the tail shard may cover padding).
  int64_t shard_begin() const { return shard_begin_; }
  int64_t shard_numel() const { return shard_; }
  int64_t total_numel() const { return total_; }
  at::Tensor& exp_avg() { return exp_avg_; }
  at::Tensor& exp_avg_sq() { return exp_avg_sq_; }
  int64_t step() const { return step_; }
  void set_step(int64_t step) { step_ = step; }

 private:
  comm::Communicator* dp_;
  std::vector<at::Tensor> params_;
  AdamWOptions options_;
  int64_t total_ = 0, shard_ = 0, shard_begin_ = 0;
  at::Tensor flat_;        // padded flat parameters (all ranks' shards)
  at::Tensor decay_mask_;  // my shard: 1 where weight decay applies
  at::Tensor exp_avg_, exp_avg_sq_;
  int64_t step_ = 0;
};

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_ZERO1_H_
