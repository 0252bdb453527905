#include "runtime/engine/train_loop.h"

#include <chrono>
#include <cmath>
#include <optional>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "runtime/engine/data/zigzag.h"
#include "runtime/engine/device.h"

namespace kp::engine {
namespace {

absl::Status CheckBatch(const at::Tensor& batch, const TrainingConfig& t, int64_t micro_batch,
                        int64_t step, int micro) {
  if (batch.dim() != 2 || batch.size(0) != micro_batch || batch.size(1) != t.seq_len + 1 ||
      batch.scalar_type() != at::kLong) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch of step ", step, " micro-step ", micro, " has shape ", c10::str(batch.sizes()),
        " and dtype ", c10::toString(batch.scalar_type()), "; expected int64 [",
        micro_batch, ", ", t.seq_len + 1, "] (training.micro_batch, training.seq_len + 1)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TrainResult> TrainLoop(const Config& config, Transformer& model,
                                      Optimizer& optimizer, BatchSource& data,
                                      GradientSync& sync, CheckpointSink* checkpoints,
                                      MetricsSink& metrics, const TrainLoopOptions& options) {
  const TrainingConfig& t = config.training;
  const c10::Device device = options.device;
  // Which tokens of each sequence this rank holds: all of them, or with
  // context parallelism the zigzag shard (chunks r and 2cp-1-r) with their
  // global positions, so RoPE and the causal mask see the true positions.
  AttentionContext actx = WholeSequenceContext(t.seq_len, device);
  if (options.cp_size > 1) {
    KP_ASSIGN_OR_RETURN(at::Tensor positions,
                        data::ZigzagPositions(t.seq_len, options.cp_rank, options.cp_size));
    actx.positions = positions.to(device);
    actx.layout = SequenceLayout::kZigzag;
    actx.cp_rank = options.cp_rank;
    actx.cp_size = options.cp_size;
  }
  // What makes long sequences fit (host-offloaded checkpoints, MLP tiles)
  // is a property of the run, not of the model's shape: set it here.
  model.set_long_context({t.offload_checkpoints, t.mlp_tile_tokens});
  // The data-parallel layout; an in-process recovery may change it, never
  // the global batch (micro_batch * grad_accum * dp_world).
  DpLayout layout;
  layout.dp_world = options.dp_world;
  layout.micro_batch = t.micro_batch;
  layout.grad_accum = t.grad_accum;
  const int64_t tokens_per_step = t.micro_batch * t.seq_len * t.grad_accum * options.dp_world;
  const double flops_per_token =
      TrainingFlopsPerToken(config.model, model.NumParameters(/*include_embedding=*/false), t.seq_len);
  TrainResult result;
  double timed_tokens = 0, timed_seconds = 0;

  for (int64_t step = options.start_step; step < options.end_step; ++step) {
    const auto start = std::chrono::steady_clock::now();
    const double lr = LearningRate(t, step);
    optimizer.SetLearningRate(lr);
    optimizer.ZeroGrad();

    // Forward and backward over grad_accum micro-batches; each loss is scaled
    // by 1/grad_accum so the accumulated gradient is that of the mean. Then
    // the data-parallel sync: after it every rank holds the same averaged
    // gradients. Nothing here touches the weights, so a step that failed
    // (a dead peer) can be redone after an in-process recovery.
    double loss = 0;
    auto forward_backward_sync = [&]() -> absl::Status {
      at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
      for (int micro = 0; micro < layout.grad_accum; ++micro) {
        KP_ASSIGN_OR_RETURN(at::Tensor batch, data.Batch(step, micro));
        KP_RETURN_IF_ERROR(CheckBatch(batch, t, layout.micro_batch, step, micro));
        batch = batch.to(device);
        at::Tensor inputs = batch.narrow(1, 0, t.seq_len);
        at::Tensor targets = batch.narrow(1, 1, t.seq_len);
        if (options.cp_size > 1) {
          KP_ASSIGN_OR_RETURN(inputs, data::ZigzagShard(inputs, 1, options.cp_rank, options.cp_size));
          KP_ASSIGN_OR_RETURN(targets, data::ZigzagShard(targets, 1, options.cp_rank, options.cp_size));
        }
        // With cp > 1 this is the mean over this rank's shard; the gradient
        // average over all dp * cp ranks then equals that of the global mean.
        at::Tensor micro_loss = model.Loss(inputs, targets, actx, t.loss_chunk_tokens);
        sync.PrepareForBackward(/*last_micro_step=*/micro == layout.grad_accum - 1);
        (micro_loss / static_cast<double>(layout.grad_accum)).backward();
        loss_sum += micro_loss.detach().to(at::kDouble);
      }
      KP_RETURN_IF_ERROR(sync.Finish());
      // The loss every rank logs is the mean over all ranks. Its all-reduce
      // is a collective of the step like the gradients' (a peer dying here
      // is recovered the same way) and comes before any weight changes.
      loss = loss_sum.item<double>() / static_cast<double>(layout.grad_accum);
      if (options.mean_loss_across_ranks) {
        KP_ASSIGN_OR_RETURN(loss, options.mean_loss_across_ranks(loss));
      }
      return absl::OkStatus();
    };
    absl::Status attempt = forward_backward_sync();
    int redone = 0;
    while (!attempt.ok() && options.recovery != nullptr && !absl::IsCancelled(attempt)) {
      // Each recovery loses at least one rank: more than dp_world of them in
      // one step means something else is failing.
      if (++redone > options.dp_world) {
        return absl::Status(attempt.code(), absl::StrCat("step ", step, " failed again after ",
                                                         redone - 1, " recoveries: ",
                                                         attempt.message()));
      }
      KP_ASSIGN_OR_RETURN(layout, options.recovery->Recover(step, attempt));
      ++result.recoveries;
      optimizer.ZeroGrad();
      attempt = forward_backward_sync();
    }
    KP_RETURN_IF_ERROR(attempt);

    // NaN check before anything touches the weights. The decision uses the
    // synchronised gradient norm, so every rank decides the same way.
    at::Tensor grad_norm_t = GlobalGradNorm(optimizer.parameters());
    const double grad_norm = grad_norm_t.item<double>();
    const bool finite = std::isfinite(grad_norm) && std::isfinite(loss);
    if (!finite && t.nan_policy == NanPolicy::kStop) {
      return absl::InternalError(absl::StrCat(
          "non-finite loss (", loss, ") or gradient norm (", grad_norm, ") at step ", step,
          "; training.nan_policy is stop. The last checkpoint is untouched."));
    }
    if (finite) {
      // Global-norm clipping: gradients scaled by clip / norm when above,
      // applied by the optimizer as it reads them (Optimizer::Step).
      std::optional<at::Tensor> divisor;
      if (t.grad_clip > 0 && grad_norm > t.grad_clip) {
        divisor = at::scalar_tensor((grad_norm + 1e-6) / t.grad_clip,
                                    grad_norm_t.options().dtype(at::kFloat));
      }
      optimizer.Step(divisor);
    } else {
      ++result.skipped_steps;  // nan_policy skip: no update, the data moves on
    }
    optimizer.ZeroGrad();

    Synchronize(device);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    StepMetrics m;
    m.step = step;
    m.loss = loss;
    m.lr = lr;
    m.grad_norm = grad_norm;
    m.time_s = seconds;
    m.tokens_per_s = static_cast<double>(tokens_per_step) / seconds;
    m.mfu = options.peak_flops > 0 ? flops_per_token * m.tokens_per_s /
                                         (options.peak_flops * layout.dp_world * options.cp_size)
                                   : 0.0;
    m.peak_mem_bytes = PeakMemoryBytes(device);
    m.skipped = !finite;
    metrics.OnStep(m);
    result.losses.push_back(finite ? loss : NAN);
    if (step > options.start_step) {
      timed_tokens += static_cast<double>(tokens_per_step);
      timed_seconds += seconds;
    }

    // Periodic checkpoint (and one at the end). Parameters are finite here:
    // a non-finite step changed nothing.
    const bool last = step + 1 == options.end_step;
    if (checkpoints != nullptr &&
        (last || (t.checkpoint_every > 0 && (step + 1) % t.checkpoint_every == 0))) {
      KP_RETURN_IF_ERROR(checkpoints->Save(step + 1, model, optimizer));
    }
  }

  result.next_step = options.end_step;
  int n = 0;
  for (auto it = result.losses.rbegin(); it != result.losses.rend() && n < 10; ++it) {
    if (std::isfinite(*it)) {
      result.final_loss += *it;
      ++n;
    }
  }
  result.final_loss = n > 0 ? result.final_loss / n : NAN;
  result.mean_tokens_per_s = timed_seconds > 0 ? timed_tokens / timed_seconds : 0.0;
  return result;
}

}  // namespace kp::engine
