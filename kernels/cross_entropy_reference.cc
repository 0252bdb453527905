#include <cmath>
#include <limits>

#include "kernels/cross_entropy.h"

namespace kp::kernels {
namespace {

double RowLse(const float* x, int64_t vocab) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t v = 0; v < vocab; ++v) m = std::fmax(m, x[v]);
  double s = 0;
  for (int64_t v = 0; v < vocab; ++v) s += std::exp(x[v] - m);
  return m + std::log(s);
}

}  // namespace

void CrossEntropyForwardReference(const float* logits, int64_t rows, int64_t vocab,
                                  const int64_t* targets, double* loss, double* lse) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits + r * vocab;
    lse[r] = RowLse(x, vocab);
    const int64_t t = targets[r];
    loss[r] = t >= 0 && t < vocab ? lse[r] - x[t] : std::numeric_limits<double>::quiet_NaN();
  }
}

void CrossEntropyBackwardReference(const float* logits, int64_t rows, int64_t vocab,
                                   const int64_t* targets, const float* grad_row,
                                   int64_t grad_row_stride, double* grad) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits + r * vocab;
    const double lse = RowLse(x, vocab);
    const int64_t t = targets[r];
    const bool valid = t >= 0 && t < vocab;
    const double g = grad_row[r * grad_row_stride];
    for (int64_t v = 0; v < vocab; ++v) {
      grad[r * vocab + v] = valid ? (std::exp(x[v] - lse) - (v == t ? 1.0 : 0.0)) * g
                                  : std::numeric_limits<double>::quiet_NaN();
    }
  }
}

}  // namespace kp::kernels
