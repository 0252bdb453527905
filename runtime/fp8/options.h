// What a job asks of FP8 training: the scaling recipe, its window and margin,
// what to do where FP8 is unsupported, and how layers choose BF16 or FP8.
#ifndef KP_RUNTIME_FP8_OPTIONS_H_
#define KP_RUNTIME_FP8_OPTIONS_H_

#include <cstdint>
#include <map>
#include <string>

#include "runtime/common/status.h"

namespace kp::fp8 {

enum class Fp8Recipe {
  // Scale from this step's amax of the very tensor being cast: an amax pass,
  // then the cast (two reads of the input). Robust to sudden range changes.
  kCurrent,
  // Scale from the max over a window of past amaxes (Transformer Engine's
  // default): one fused pass that casts and records the amax for the next
  // step. A tensor whose range jumps within the window saturates for a step.
  kDelayed,
};

struct Fp8Options {
  Fp8Recipe recipe = Fp8Recipe::kDelayed;
  // Steps of amax history for the delayed recipe (>= 1).
  int64_t amax_history_len = 16;
  // scale = fp8_max / (amax * 2^margin): headroom in powers of two.
  int64_t margin = 0;
  // Where FP8 is unsupported (CPU, GPUs below compute capability 8.9): train
  // in BF16 and log it loudly (true), or fail at start with the reason.
  bool allow_fallback = false;
  // The LM head stays BF16 unless this is set (its logits are sensitive and
  // its GEMM is shaped by the vocabulary).
  bool fp8_lm_head = false;
  // Tokens per micro-batch on this rank (batch * seq / cp): the M of every
  // projection's GEMM. 0: do not time layers at start-up, use FP8 wherever
  // the shape allows it.
  int64_t tokens = 0;
  // Iterations per precision when timing a layer shape at start-up.
  int64_t autotune_iters = 5;
  // FP8 is kept only where it is at least this much faster than BF16
  // (bf16_time / fp8_time >= min_speedup).
  double min_speedup = 1.0;
  // cuBLASLt's fast accumulation for the forward GEMM (as torchao and
  // Transformer Engine do: faster, slightly less precise); the two backward
  // GEMMs always accumulate fully.
  bool fast_accum_forward = true;
  // Tests only: run FP8 on CPU through the reference cast and ATen's CPU
  // _scaled_mm (slow, exact same rounding). Jobs never set this.
  bool allow_cpu_emulation = false;
  // Layer name -> FP8 (true) or BF16 (false), decided by an earlier run:
  // a resumed job restores these (Fp8Session::EncodeChoices in the
  // checkpoint) instead of timing again, so timing noise cannot flip a layer
  // and change the trajectory. Layers not listed are decided as usual.
  std::map<std::string, bool> forced_choices;
};

const char* RecipeName(Fp8Recipe r);
absl::StatusOr<Fp8Recipe> ParseRecipe(const std::string& name);
// Field-level checks with messages that name the field.
absl::Status ValidateOptions(const Fp8Options& o);

}  // namespace kp::fp8

#endif  // KP_RUNTIME_FP8_OPTIONS_H_
