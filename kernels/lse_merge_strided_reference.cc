#include "kernels/lse_merge_strided.h"
#include "kernels/merge_math.h"

namespace kp::kernels {

void MergeAttentionBlockStridedReference(const StridedMergeArgs& a) {
  const float* blk_base = static_cast<const float*>(a.blk);
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int64_t h = 0; h < a.heads; ++h) {
      for (int64_t t = 0; t < a.rows; ++t) {
        float* acc_lse = a.acc_lse + b * a.acc_lse_strides.b + h * a.acc_lse_strides.h +
                         t * a.acc_lse_strides.t;
        const float blk_lse = a.blk_lse[b * a.blk_lse_strides.b + h * a.blk_lse_strides.h +
                                        t * a.blk_lse_strides.t];
        const MergeWeights w = ComputeMergeWeights(*acc_lse, blk_lse);
        float* acc = a.acc + b * a.acc_strides.b + h * a.acc_strides.h + t * a.acc_strides.t;
        const float* blk =
            blk_base + b * a.blk_strides.b + h * a.blk_strides.h + t * a.blk_strides.t;
        for (int i = 0; i < a.dim; ++i) acc[i] = w.keep * acc[i] + w.take * blk[i];
        *acc_lse = w.lse;
      }
    }
  }
}

}  // namespace kp::kernels
