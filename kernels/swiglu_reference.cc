#include <cmath>

#include "kernels/swiglu.h"

namespace kp::kernels {

void SwiGluForwardReference(const float* gate_up, int64_t rows, int64_t cols, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate_up + r * 2 * cols;
    const float* u = g + cols;
    for (int64_t c = 0; c < cols; ++c) {
      const float s = 1.0f / (1.0f + std::exp(-g[c]));
      out[r * cols + c] = g[c] * s * u[c];
    }
  }
}

void SwiGluBackwardReference(const float* dout, const float* gate_up, int64_t rows, int64_t cols,
                             float* dgate_up) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate_up + r * 2 * cols;
    const float* u = g + cols;
    const float* d = dout + r * cols;
    float* dg = dgate_up + r * 2 * cols;
    float* du = dg + cols;
    for (int64_t c = 0; c < cols; ++c) {
      const float s = 1.0f / (1.0f + std::exp(-g[c]));
      dg[c] = d[c] * u[c] * s * (1.0f + g[c] * (1.0f - s));
      du[c] = d[c] * g[c] * s;
    }
  }
}

}  // namespace kp::kernels
