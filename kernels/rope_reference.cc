#include "kernels/rope.h"

namespace kp::kernels {

void RopeQkvForwardReference(const float* qkv, const float* cos, const float* sin,
                             const RopeShape& s, float* q, float* k, float* v) {
  const int64_t half = s.head_dim / 2, width = s.row_width();
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t t = 0; t < s.seq; ++t) {
      const float* row = qkv + (b * s.seq + t) * width;
      for (int64_t h = 0; h < s.heads + 2 * s.kv_heads; ++h) {
        const float* x = row + h * s.head_dim;
        float* y;
        if (h < s.heads) {
          y = q + ((b * s.heads + h) * s.seq + t) * s.head_dim;
        } else if (h < s.heads + s.kv_heads) {
          y = k + ((b * s.kv_heads + h - s.heads) * s.seq + t) * s.head_dim;
        } else {
          y = v + ((b * s.kv_heads + h - s.heads - s.kv_heads) * s.seq + t) * s.head_dim;
          for (int64_t i = 0; i < s.head_dim; ++i) y[i] = x[i];
          continue;
        }
        for (int64_t i = 0; i < half; ++i) {
          const float c = cos[t * half + i], sn = sin[t * half + i];
          y[i] = x[i] * c - x[i + half] * sn;
          y[i + half] = x[i + half] * c + x[i] * sn;
        }
      }
    }
  }
}

void RopeQkvBackwardReference(const float* dq, const float* dk, const float* dv,
                              const float* cos, const float* sin, const RopeShape& s,
                              float* dqkv) {
  const int64_t half = s.head_dim / 2, width = s.row_width();
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t t = 0; t < s.seq; ++t) {
      float* row = dqkv + (b * s.seq + t) * width;
      for (int64_t h = 0; h < s.heads + 2 * s.kv_heads; ++h) {
        float* x = row + h * s.head_dim;
        const float* g;
        if (h < s.heads) {
          g = dq + ((b * s.heads + h) * s.seq + t) * s.head_dim;
        } else if (h < s.heads + s.kv_heads) {
          g = dk + ((b * s.kv_heads + h - s.heads) * s.seq + t) * s.head_dim;
        } else {
          g = dv + ((b * s.kv_heads + h - s.heads - s.kv_heads) * s.seq + t) * s.head_dim;
          for (int64_t i = 0; i < s.head_dim; ++i) x[i] = g[i];
          continue;
        }
        // The rotation's transpose: the same pairs rotated by -angle.
        for (int64_t i = 0; i < half; ++i) {
          const float c = cos[t * half + i], sn = sin[t * half + i];
          x[i] = g[i] * c + g[i + half] * sn;
          x[i + half] = g[i + half] * c - g[i] * sn;
        }
      }
    }
  }
}

}  // namespace kp::kernels
