// Deterministic batches: what a rank trains on is a pure function of
// (seed, step, rank), so a resumed run sees exactly the samples the
// uninterrupted run would have, and dp = W sees the same global batch as dp = 1.
//
// Sample g (a global index) is the window of seq_len + 1 tokens starting at
// offset(seed, g) = Mix64(seed, g) mod (source size - seq_len), drawn
// independently with replacement. Step s's global batch is samples
// [s * global_batch, (s + 1) * global_batch); rank r of dp world W takes the
// contiguous slice [r * b, (r + 1) * b) of it, b = global_batch / W; with
// gradient accumulation over A micro steps, micro step j of rank r takes
// [r * b + j * b / A, r * b + (j + 1) * b / A).
#ifndef KP_RUNTIME_ENGINE_DATA_SAMPLER_H_
#define KP_RUNTIME_ENGINE_DATA_SAMPLER_H_

#include <cstdint>
#include <memory>

#include <ATen/core/Tensor.h>

#include "runtime/common/status.h"
#include "runtime/engine/data/token_source.h"

namespace kp::data {

struct SamplerOptions {
  uint64_t seed = 0;
  int64_t seq_len = 0;       // T: a sample holds T + 1 tokens
  int64_t global_batch = 0;  // samples per optimizer step, all ranks together
  int dp_rank = 0;
  int dp_world = 1;
  int grad_accum = 1;        // micro steps per optimizer step on each rank
};

class Sampler {
 public:
  // INVALID_ARGUMENT naming the field if global_batch is not a multiple of
  // dp_world * grad_accum, if a rank is out of range, or if the source holds
  // fewer than seq_len + 1 tokens.
  static absl::StatusOr<std::unique_ptr<Sampler>> Create(std::shared_ptr<const TokenSource> source,
                                                         const SamplerOptions& options);

  // This rank's samples of optimizer step `step`, micro step `micro`
  // (< grad_accum): int64 CPU tensor [b / grad_accum, T + 1]. Inputs are
  // [:, :-1], targets [:, 1:]. Errors come from the source (a corrupt token).
  absl::StatusOr<at::Tensor> Batch(int64_t step, int micro = 0) const;

  // Samples [first, first + count) by global index: int64 [count, T + 1].
  absl::StatusOr<at::Tensor> Samples(int64_t first, int64_t count) const;

  // Where sample g starts in the source.
  uint64_t SampleOffset(int64_t global_index) const;

  // Samples per rank per micro step.
  int64_t micro_batch() const;
  // The data position to store in a checkpoint: samples consumed by all
  // ranks before optimizer step `step` (= step * global_batch).
  int64_t DataPosition(int64_t step) const { return step * options_.global_batch; }
  const SamplerOptions& options() const { return options_; }

 private:
  Sampler(std::shared_ptr<const TokenSource> source, const SamplerOptions& options);
  std::shared_ptr<const TokenSource> source_;
  SamplerOptions options_;
};

}  // namespace kp::data

#endif  // KP_RUNTIME_ENGINE_DATA_SAMPLER_H_
