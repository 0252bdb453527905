// AdamW with two parameter groups, the learning-rate schedule and global-norm
// gradient clipping.
//
// Groups: weight decay on the projection matrices (every Linear weight,
// including the LM head); none on RMSNorm gains and the token embedding
// (tied or not): decaying a lookup table or a gain pulls rarely-seen rows and
// per-channel scales towards zero without regularising anything useful.
// Parameters are the fp32 master weights, so the optimizer state is fp32.
#ifndef KP_RUNTIME_ENGINE_OPTIMIZER_H_
#define KP_RUNTIME_ENGINE_OPTIMIZER_H_

#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/optim/adamw.h>

#include "runtime/common/status.h"
#include "runtime/engine/config.h"
#include "runtime/engine/model.h"

namespace kp::engine {

// Linear warmup from lr/warmup to lr over warmup_steps, then a half cosine
// from lr down to min_lr at the last step. step counts from 0.
double LearningRate(const TrainingConfig& t, int64_t step);

// sqrt(sum of squared gradient entries) over all params with a gradient,
// accumulated in fp32 (fp64 for fp64 params). A 0-dim tensor on the params'
// device: no host sync until the caller reads it.
at::Tensor GlobalGradNorm(const std::vector<at::Tensor>& params);

// Multiplies every gradient by `factor` (a 0-dim tensor, no host sync).
void ScaleGradients(const std::vector<at::Tensor>& params, const at::Tensor& factor);

class Optimizer {
 public:
  Optimizer(Transformer& model, const TrainingConfig& t);

  void SetLearningRate(double lr);
  // CUDA parameters take ATen's fused multi-tensor AdamW kernel (one launch
  // per group instead of ~10 per parameter); CPU keeps torch::optim::AdamW.
  // Both implement the same update; state lives in torch::optim's map.
  //
  // grad_divisor (a 0-dim fp32 tensor on the params' device, optional):
  // every gradient is divided by it first. Global-norm clipping passes
  // norm / clip here, so the fused kernel applies it while it reads the
  // gradients anyway instead of a separate pass over them.
  void Step(const std::optional<at::Tensor>& grad_divisor = std::nullopt);
  // The fused path alone, on any device (ATen has a CPU kernel too): tests
  // compare it with torch::optim::AdamW on CPU.
  void FusedStep(const std::optional<at::Tensor>& grad_divisor = std::nullopt);
  void ZeroGrad();
  const std::vector<at::Tensor>& parameters() const { return params_; }

  // The optimizer's state as named CPU-or-device tensors for a checkpoint:
  // "<param name>.exp_avg", "<param name>.exp_avg_sq" and "<param name>.step"
  // (int64 scalar). Empty before the first step.
  std::map<std::string, at::Tensor> StateDict() const;
  // Restores StateDict() output; INVALID_ARGUMENT naming the entry on a
  // missing tensor or a shape mismatch.
  absl::Status LoadStateDict(const std::map<std::string, at::Tensor>& state);

 private:
  TrainingConfig config_;
  double lr_;
  std::vector<std::string> names_;
  std::vector<at::Tensor> params_;
  std::vector<std::vector<at::Tensor>> groups_;  // decay, no decay
  std::unique_ptr<torch::optim::AdamW> adamw_;
  // Fused path: the step count as the float32 device scalar the kernel wants.
  std::map<void*, at::Tensor> fused_steps_;
};

}  // namespace kp::engine

#endif  // KP_RUNTIME_ENGINE_OPTIMIZER_H_
