#include <algorithm>

#include <cuda_bf16.h>

#include "kernels/bf16_vec.cuh"
#include "kernels/rope.h"

namespace kp::kernels {
namespace {

using bf16 = __nv_bfloat16;

// One block per token (grid-stride over tokens), its threads over the
// token's (head, chunk of kVec pairs) items: the qkv row (forward) or dqkv
// row (backward) is read/written contiguously, and each head's Dh values sit
// in one contiguous row of the per-head layout. Integer work is 32-bit except
// the token's base offsets.
template <int kVec>
__global__ void RopeForwardKernel(const bf16* __restrict__ qkv, const float* __restrict__ cos,
                                  const float* __restrict__ sin, int64_t tokens, int seq,
                                  int heads, int kv_heads, int head_dim, bf16* __restrict__ q,
                                  HeadStrides sq, bf16* __restrict__ k, HeadStrides sk,
                                  bf16* __restrict__ v, HeadStrides sv) {
  const int half = head_dim / 2;
  const int chunks = half / kVec;
  const int all_heads = heads + 2 * kv_heads;
  const int work = all_heads * chunks;
  for (int64_t bt = blockIdx.x; bt < tokens; bt += gridDim.x) {
    const int64_t b = bt / seq;
    const int t = static_cast<int>(bt - b * seq);
    const bf16* row = qkv + bt * all_heads * head_dim;
    bf16* const q_base = q + b * sq.batch + t * sq.seq;
    bf16* const k_base = k + b * sk.batch + t * sk.seq;
    bf16* const v_base = v + b * sv.batch + t * sv.seq;
    for (int j = threadIdx.x; j < work; j += blockDim.x) {
      const int h = j / chunks;
      const int c = (j - h * chunks) * kVec;
      const bf16* src = row + h * head_dim + c;
      if (h >= heads + kv_heads) {
        bf16* dst = v_base + (h - heads - kv_heads) * sv.head + c;
        CopyBf16<kVec>(dst, src);
        CopyBf16<kVec>(dst + half, src + half);
        continue;
      }
      bf16* dst = h < heads ? q_base + h * sq.head + c : k_base + (h - heads) * sk.head + c;
      float x1[kVec], x2[kVec], cs[kVec], sn[kVec], y1[kVec], y2[kVec];
      LoadBf16<kVec>(src, x1);
      LoadBf16<kVec>(src + half, x2);
      LoadF32<kVec>(cos + static_cast<int64_t>(t) * half + c, cs);
      LoadF32<kVec>(sin + static_cast<int64_t>(t) * half + c, sn);
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        y1[i] = x1[i] * cs[i] - x2[i] * sn[i];
        y2[i] = x2[i] * cs[i] + x1[i] * sn[i];
      }
      StoreBf16<kVec>(dst, y1);
      StoreBf16<kVec>(dst + half, y2);
    }
  }
}

template <int kVec>
__global__ void RopeBackwardKernel(const bf16* __restrict__ dq, HeadStrides sq,
                                   const bf16* __restrict__ dk, HeadStrides sk,
                                   const bf16* __restrict__ dv, HeadStrides sv,
                                   const float* __restrict__ cos, const float* __restrict__ sin,
                                   int64_t tokens, int seq, int heads, int kv_heads, int head_dim,
                                   bf16* __restrict__ dqkv) {
  const int half = head_dim / 2;
  const int chunks = half / kVec;
  const int all_heads = heads + 2 * kv_heads;
  const int work = all_heads * chunks;
  for (int64_t bt = blockIdx.x; bt < tokens; bt += gridDim.x) {
    const int64_t b = bt / seq;
    const int t = static_cast<int>(bt - b * seq);
    bf16* row = dqkv + bt * all_heads * head_dim;
    for (int j = threadIdx.x; j < work; j += blockDim.x) {
      const int h = j / chunks;
      const int c = (j - h * chunks) * kVec;
      bf16* dst = row + h * head_dim + c;
      if (h >= heads + kv_heads) {
        const bf16* src = dv + b * sv.batch + (h - heads - kv_heads) * sv.head + t * sv.seq + c;
        CopyBf16<kVec>(dst, src);
        CopyBf16<kVec>(dst + half, src + half);
        continue;
      }
      const bf16* src = h < heads ? dq + b * sq.batch + h * sq.head + t * sq.seq + c
                                  : dk + b * sk.batch + (h - heads) * sk.head + t * sk.seq + c;
      float g1[kVec], g2[kVec], cs[kVec], sn[kVec], x1[kVec], x2[kVec];
      LoadBf16<kVec>(src, g1);
      LoadBf16<kVec>(src + half, g2);
      LoadF32<kVec>(cos + static_cast<int64_t>(t) * half + c, cs);
      LoadF32<kVec>(sin + static_cast<int64_t>(t) * half + c, sn);
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        x1[i] = g1[i] * cs[i] + g2[i] * sn[i];
        x2[i] = g2[i] * cs[i] - g1[i] * sn[i];
      }
      StoreBf16<kVec>(dst, x1);
      StoreBf16<kVec>(dst + half, x2);
    }
  }
}

struct Launch {
  dim3 grid, block;
};

Launch Configure(const RopeShape& s, int vec) {
  const int64_t tokens = s.batch * s.seq;
  const int64_t work = (s.heads + 2 * s.kv_heads) * (s.head_dim / 2 / vec);
  const int threads = static_cast<int>(std::min<int64_t>(512, (work + 31) / 32 * 32));
  // Enough blocks to fill the GPU many times over; the grid-stride loop
  // covers the rest (gridDim.x is limited to 2^31 - 1).
  const int64_t blocks = std::min<int64_t>(tokens, int64_t{1} << 30);
  return {dim3(static_cast<unsigned>(blocks)), dim3(threads)};
}

bool StridesAligned(const HeadStrides& s) {
  return s.batch % 8 == 0 && s.head % 8 == 0 && s.seq % 8 == 0;
}

cudaError_t CheckShape(const RopeShape& s) {
  if (s.batch < 0 || s.seq < 0 || s.heads < 0 || s.kv_heads < 0 || s.head_dim <= 0 ||
      s.head_dim % 2 != 0 || s.row_width() > (int64_t{1} << 30)) {
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t RopeQkvForward(const void* qkv, const float* cos, const float* sin,
                           const RopeShape& shape, void* q, HeadStrides q_strides, void* k,
                           HeadStrides k_strides, void* v, HeadStrides v_strides,
                           cudaStream_t stream) {
  if (cudaError_t e = CheckShape(shape); e != cudaSuccess) return e;
  const int64_t tokens = shape.batch * shape.seq;
  if (tokens == 0 || shape.row_width() == 0) return cudaSuccess;
  const bool vec = (shape.head_dim / 2) % 8 == 0 && Aligned16(qkv) && Aligned16(cos) &&
                   Aligned16(sin) && Aligned16(q) && Aligned16(k) && Aligned16(v) &&
                   StridesAligned(q_strides) && StridesAligned(k_strides) &&
                   StridesAligned(v_strides);
  const Launch l = Configure(shape, vec ? 8 : 1);
  const auto* in = static_cast<const bf16*>(qkv);
  auto* oq = static_cast<bf16*>(q);
  auto* ok = static_cast<bf16*>(k);
  auto* ov = static_cast<bf16*>(v);
  const int seq = static_cast<int>(shape.seq), h = static_cast<int>(shape.heads),
            hkv = static_cast<int>(shape.kv_heads), dh = static_cast<int>(shape.head_dim);
  if (vec) {
    RopeForwardKernel<8><<<l.grid, l.block, 0, stream>>>(in, cos, sin, tokens, seq, h, hkv, dh,
                                                         oq, q_strides, ok, k_strides, ov,
                                                         v_strides);
  } else {
    RopeForwardKernel<1><<<l.grid, l.block, 0, stream>>>(in, cos, sin, tokens, seq, h, hkv, dh,
                                                         oq, q_strides, ok, k_strides, ov,
                                                         v_strides);
  }
  return cudaGetLastError();
}

cudaError_t RopeQkvBackward(const void* dq, HeadStrides dq_strides, const void* dk,
                            HeadStrides dk_strides, const void* dv, HeadStrides dv_strides,
                            const float* cos, const float* sin, const RopeShape& shape,
                            void* dqkv, cudaStream_t stream) {
  if (cudaError_t e = CheckShape(shape); e != cudaSuccess) return e;
  const int64_t tokens = shape.batch * shape.seq;
  if (tokens == 0 || shape.row_width() == 0) return cudaSuccess;
  const bool vec = (shape.head_dim / 2) % 8 == 0 && Aligned16(dq) && Aligned16(dk) &&
                   Aligned16(dv) && Aligned16(cos) && Aligned16(sin) && Aligned16(dqkv) &&
                   StridesAligned(dq_strides) && StridesAligned(dk_strides) &&
                   StridesAligned(dv_strides);
  const Launch l = Configure(shape, vec ? 8 : 1);
  const auto* gq = static_cast<const bf16*>(dq);
  const auto* gk = static_cast<const bf16*>(dk);
  const auto* gv = static_cast<const bf16*>(dv);
  auto* out = static_cast<bf16*>(dqkv);
  const int seq = static_cast<int>(shape.seq), h = static_cast<int>(shape.heads),
            hkv = static_cast<int>(shape.kv_heads), dh = static_cast<int>(shape.head_dim);
  if (vec) {
    RopeBackwardKernel<8><<<l.grid, l.block, 0, stream>>>(gq, dq_strides, gk, dk_strides, gv,
                                                          dv_strides, cos, sin, tokens, seq, h,
                                                          hkv, dh, out);
  } else {
    RopeBackwardKernel<1><<<l.grid, l.block, 0, stream>>>(gq, dq_strides, gk, dk_strides, gv,
                                                          dv_strides, cos, sin, tokens, seq, h,
                                                          hkv, dh, out);
  }
  return cudaGetLastError();
}

}  // namespace kp::kernels
