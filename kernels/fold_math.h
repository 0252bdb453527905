// The per-row weights of an LSE fold, shared by the CUDA kernel and the CPU
// reference so both evaluate the same formula in the same order.
#ifndef KP_KERNELS_FOLD_MATH_H_
#define KP_KERNELS_FOLD_MATH_H_

#include <cmath>

#include "kernels/merge_math.h"

namespace kp::kernels {

// lse = m + log(sum_i exp(lse_i - m)), m = max_i lse_i; each weight is
// exp(lse_i - lse). Blocks whose lse is -inf (rows that saw no key) get
// weight 0, and a row where all are -inf gets lse -inf and all weights 0.
// `lses` holds n values; `weights` receives n.
KP_HOST_DEVICE inline float FoldLseWeights(const float* lses, int n, float* weights) {
  float m = -INFINITY;
  for (int i = 0; i < n; ++i) m = fmaxf(m, lses[i]);
  if (m == -INFINITY) {
    for (int i = 0; i < n; ++i) weights[i] = 0.0f;
    return -INFINITY;
  }
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += expf(lses[i] - m);
  const float lse = m + logf(s);
  for (int i = 0; i < n; ++i) weights[i] = expf(lses[i] - lse);
  return lse;
}

}  // namespace kp::kernels

#endif  // KP_KERNELS_FOLD_MATH_H_
