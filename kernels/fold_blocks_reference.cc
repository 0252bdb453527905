#include <cmath>
#include <cstring>

#include "kernels/fold_blocks.h"
#include "kernels/fold_math.h"

namespace kp::kernels {
namespace {

int64_t At(const Strides3& s, int64_t b, int64_t h, int64_t t) {
  return b * s.b + h * s.h + t * s.t;
}

float Load(const void* base, DType dt, int64_t offset) {
  if (dt == DType::kFloat32) return static_cast<const float*>(base)[offset];
  const uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(base)[offset]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Round to nearest even, as __float2bfloat16_rn (NaN kept quiet).
uint16_t ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if (std::isnan(f)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

}  // namespace

void FoldBlocksReference(const FoldArgs& a) {
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int64_t h = 0; h < a.heads; ++h) {
      for (int64_t t = 0; t < a.rows; ++t) {
        int covering[kMaxFoldBlocks];
        float weight[kMaxFoldBlocks];
        int n = 0;
        for (int i = 0; i < a.num_blocks; ++i) {
          const FoldBlock& blk = a.blocks[i];
          if (t >= blk.row_offset && t < blk.row_offset + blk.rows) covering[n++] = i;
        }
        float lse = -INFINITY;
        if (a.kind == FoldKind::kLseMerge) {
          float lses[kMaxFoldBlocks];
          for (int j = 0; j < n; ++j) {
            const FoldBlock& blk = a.blocks[covering[j]];
            lses[j] = blk.lse[At(blk.lse_strides, b, h, t - blk.row_offset)];
          }
          lse = FoldLseWeights(lses, n, weight);
        } else {
          for (int j = 0; j < n; ++j) weight[j] = 1.0f;
        }
        const int64_t out_base = At(a.out_strides, b, h, t);
        for (int i = 0; i < a.dim; ++i) {
          float acc = 0.0f;
          for (int j = 0; j < n; ++j) {
            const FoldBlock& blk = a.blocks[covering[j]];
            if (weight[j] == 0.0f) continue;
            acc = std::fma(weight[j],
                           Load(blk.data, blk.dtype, At(blk.strides, b, h, t - blk.row_offset) + i),
                           acc);
          }
          if (a.out_dtype == DType::kFloat32) {
            static_cast<float*>(a.out)[out_base + i] = acc;
          } else {
            static_cast<uint16_t*>(a.out)[out_base + i] = ToBf16(acc);
          }
        }
        if (a.kind == FoldKind::kLseMerge) a.out_lse[At(a.out_lse_strides, b, h, t)] = lse;
      }
    }
  }
}

}  // namespace kp::kernels
