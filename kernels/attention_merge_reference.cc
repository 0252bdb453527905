#include "kernels/attention_merge.h"
#include "kernels/merge_math.h"

namespace kp::kernels {

void MergeAttentionBlockReference(float* acc, float* acc_lse, int64_t acc_stride, const float* blk,
                                  const float* blk_lse, int64_t blk_stride, int64_t rows, int dim) {
  for (int64_t r = 0; r < rows; ++r) {
    const MergeWeights w = ComputeMergeWeights(acc_lse[r], blk_lse[r]);
    float* a = acc + r * acc_stride;
    const float* b = blk + r * blk_stride;
    for (int i = 0; i < dim; ++i) a[i] = w.keep * a[i] + w.take * b[i];
    acc_lse[r] = w.lse;
  }
}

}  // namespace kp::kernels
