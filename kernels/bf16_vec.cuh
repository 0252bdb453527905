// Loads and stores of kVec consecutive bf16 values as fp32 registers: one
// 16-byte transaction when kVec == 8 (the caller guarantees 16-byte
// alignment), element by element otherwise. Shared by the element-wise
// kernels (RoPE, SwiGLU).
#ifndef KP_KERNELS_BF16_VEC_CUH_
#define KP_KERNELS_BF16_VEC_CUH_

#include <cstdint>

#include <cuda_bf16.h>

namespace kp::kernels {

template <int kVec>
__device__ __forceinline__ void LoadBf16(const __nv_bfloat16* p, float (&out)[kVec]) {
  if constexpr (kVec == 8) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(h[i]);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) out[i] = __bfloat162float(p[i]);
  }
}

template <int kVec>
__device__ __forceinline__ void StoreBf16(__nv_bfloat16* p, const float (&in)[kVec]) {
  if constexpr (kVec == 8) {
    uint4 raw;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
    *reinterpret_cast<uint4*>(p) = raw;
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) p[i] = __float2bfloat16_rn(in[i]);
  }
}

// Copies kVec bf16 values without converting them (bit-exact).
template <int kVec>
__device__ __forceinline__ void CopyBf16(__nv_bfloat16* dst, const __nv_bfloat16* src) {
  if constexpr (kVec == 8) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) dst[i] = src[i];
  }
}

template <int kVec>
__device__ __forceinline__ void LoadF32(const float* p, float (&out)[kVec]) {
  if constexpr (kVec == 8) {
    const float4 a = *reinterpret_cast<const float4*>(p);
    const float4 b = *reinterpret_cast<const float4*>(p + 4);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
    out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) out[i] = p[i];
  }
}

inline bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace kp::kernels

#endif  // KP_KERNELS_BF16_VEC_CUH_
