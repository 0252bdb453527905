// The scalar math of an LSE merge, shared by the CUDA kernel and the CPU
// reference so both evaluate exactly the same formula.
#ifndef KP_KERNELS_MERGE_MATH_H_
#define KP_KERNELS_MERGE_MATH_H_

#include <cmath>

#ifdef __CUDACC__
#define KP_HOST_DEVICE __host__ __device__
#else
#define KP_HOST_DEVICE
#endif

namespace kp::kernels {

struct MergeWeights {
  float keep;  // weight of the accumulator
  float take;  // weight of the new block
  float lse;   // merged log-sum-exp
};

// lse = max + log1p(exp(min - max)); the weights are exp(x - lse). When both
// inputs are -inf (no keys seen yet) the accumulator stays as it is.
KP_HOST_DEVICE inline MergeWeights ComputeMergeWeights(float acc_lse, float blk_lse) {
  const float hi = fmaxf(acc_lse, blk_lse);
  if (hi == -INFINITY) return {1.0f, 0.0f, -INFINITY};
  const float lo = fminf(acc_lse, blk_lse);
  const float lse = hi + log1pf(expf(lo - hi));
  return {expf(acc_lse - lse), expf(blk_lse - lse), lse};
}

}  // namespace kp::kernels

#endif  // KP_KERNELS_MERGE_MATH_H_
