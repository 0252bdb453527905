// Options of context-parallel attention, shared by its modes.
#ifndef KP_RUNTIME_PARALLEL_CP_OPTIONS_H_
#define KP_RUNTIME_PARALLEL_CP_OPTIONS_H_

#include <string>

#include "absl/status/statusor.h"
#include "runtime/parallel/attention_block.h"
#include "runtime/parallel/lse_merge.h"
#include "runtime/parallel/mode_select.h"

namespace kp::parallel {

struct CpOptions {
  CpMode mode = CpMode::kAuto;  // kAuto: ChooseCpMode from shapes and topology
  bool causal = true;
  double scale = 0.0;  // 0: 1/sqrt(head_dim)
  AttnBackend backend = AttnBackend::kAuto;
  CpTopology topology;  // only read by kAuto
  // Per-block partial outputs and gradients a rank keeps before folding them
  // into a float32 partial (1..15, block_fold.h). 15 folds each attention
  // call's blocks once at cp <= 13 (cp + 2 blocks a rank); lower it where the
  // pending bf16 blocks (up to ~(cp + 2) / 2 local outputs each for out, dQ,
  // dK, dV) do not fit, at the price of a float32 pass per round.
  int fold_max_pending = 15;
  // Testing only: a broken merge, to prove the parity self-check catches one.
  MergeMode merge = MergeMode::kStable;
};

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_CP_OPTIONS_H_
