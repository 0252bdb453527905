#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "kernels/fp8_cast.h"
#include "kernels/fp8_math.h"

namespace kp::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 64;       // transpose tile edge, elements
constexpr int kTilePad = 4;     // bytes of padding per shared-memory tile row
constexpr int kVec = 8;         // elements per thread per step (16 bytes of bf16)

template <Fp8Format F>
__device__ __forceinline__ uint16_t EncodePair(float lo, float hi) {
  constexpr __nv_fp8_interpretation_t kInterp = F == Fp8Format::kE4M3 ? __NV_E4M3 : __NV_E5M2;
  uint16_t r = __nv_cvt_float2_to_fp8x2(make_float2(lo, hi), __NV_SATFINITE, kInterp);
  // The hardware's NaN encoding is not pinned down; ours is (fp8_math.h).
  if (isnan(lo)) r = (r & 0xFF00u) | kFp8CanonicalNaN;
  if (isnan(hi)) r = (r & 0x00FFu) | (kFp8CanonicalNaN << 8);
  return r;
}

template <Fp8Format F>
__device__ __forceinline__ uint8_t EncodeOne(float y) {
  return static_cast<uint8_t>(EncodePair<F>(y, 0.0f) & 0xFFu);
}

template <typename T>
__device__ __forceinline__ float LoadScalar(const T* p, int64_t i);
template <>
__device__ __forceinline__ float LoadScalar<float>(const float* p, int64_t i) {
  return p[i];
}
template <>
__device__ __forceinline__ float LoadScalar<__nv_bfloat16>(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}

// Eight consecutive elements at p[i..i+7] with 16-byte loads; p + i must be
// 16-byte aligned.
__device__ __forceinline__ void LoadVec(const float* p, int64_t i, float v[kVec]) {
  const float4 a = *reinterpret_cast<const float4*>(p + i);
  const float4 b = *reinterpret_cast<const float4*>(p + i + 4);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
  v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void LoadVec(const __nv_bfloat16* p, int64_t i, float v[kVec]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p + i);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 f = __bfloat1622float2(h[k]);
    v[2 * k] = f.x;
    v[2 * k + 1] = f.y;
  }
}

struct Stats {
  float amax = 0.0f;
  unsigned long long underflow = 0;
  __device__ __forceinline__ void Add(float x, uint8_t code) {
    amax = fmaxf(amax, fabsf(x));
    underflow += (x != 0.0f && (code & 0x7F) == 0) ? 1ull : 0ull;
  }
};

// Block-wide reduction, then one atomic per block. amax is non-negative (NaN
// never enters: fmaxf drops it), so its bits order like unsigned integers.
__device__ void FlushStats(Stats s, float* amax_out, unsigned long long* underflow_out) {
  __shared__ float s_amax[kThreads / 32];
  __shared__ unsigned long long s_under[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) {
    s.amax = fmaxf(s.amax, __shfl_xor_sync(0xFFFFFFFFu, s.amax, o));
    s.underflow += __shfl_xor_sync(0xFFFFFFFFu, s.underflow, o);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) s_amax[warp] = s.amax, s_under[warp] = s.underflow;
  __syncthreads();
  if (threadIdx.x == 0) {
    float a = 0.0f;
    unsigned long long u = 0;
    for (int w = 0; w < kThreads / 32; ++w) a = fmaxf(a, s_amax[w]), u += s_under[w];
    if (amax_out != nullptr) atomicMax(reinterpret_cast<unsigned int*>(amax_out), __float_as_uint(a));
    if (underflow_out != nullptr && u != 0) atomicAdd(underflow_out, u);
  }
}

template <Fp8Format F>
__device__ __forceinline__ float ResolveScale(const Fp8CastArgs& a) {
  const float s = a.amax_for_scale != nullptr
                      ? Fp8ScaleFromAmax(*a.amax_for_scale, Fp8MaxFinite(F), a.margin, 1.0f)
                      : *a.scale;
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) {
    if (a.scale_out != nullptr) *a.scale_out = s;
    if (a.scale_inv_out != nullptr) *a.scale_inv_out = 1.0f / s;
  }
  return s;
}

// Row-major output only: a flat grid-stride loop over vectors of 8.
template <typename T, Fp8Format F, bool kVectorized>
__global__ void __launch_bounds__(kThreads) CastKernel(Fp8CastArgs a) {
  const float scale = ResolveScale<F>(a);
  const T* in = static_cast<const T*>(a.input);
  const int64_t n = a.rows * a.cols;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  Stats st;
  int64_t tail_start = 0;
  if constexpr (kVectorized) {
    const int64_t nvec = n / kVec;
    for (int64_t v = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; v < nvec; v += stride) {
      float x[kVec];
      LoadVec(in, v * kVec, x);
      uint16_t p[kVec / 2];
#pragma unroll
      for (int k = 0; k < kVec / 2; ++k) {
        p[k] = EncodePair<F>(x[2 * k] * scale, x[2 * k + 1] * scale);
        st.Add(x[2 * k], p[k] & 0xFF);
        st.Add(x[2 * k + 1], p[k] >> 8);
      }
      if (a.out != nullptr) {
        uint2 packed;
        packed.x = p[0] | (static_cast<uint32_t>(p[1]) << 16);
        packed.y = p[2] | (static_cast<uint32_t>(p[3]) << 16);
        *reinterpret_cast<uint2*>(a.out + v * kVec) = packed;
      }
    }
    tail_start = nvec * kVec;
  }
  for (int64_t i = tail_start + static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += stride) {
    const float x = LoadScalar(in, i);
    const uint8_t c = EncodeOne<F>(x * scale);
    st.Add(x, c);
    if (a.out != nullptr) a.out[i] = c;
  }
  FlushStats(st, a.amax_out, a.underflow_out);
}

// Row-major and transposed outputs: 64x64 tiles through shared memory. Reads
// are 16-byte vectors along rows; the transposed tile is written 16 bytes per
// thread, four threads per 64-byte output row segment.
template <typename T, Fp8Format F, bool kVecIn, bool kVecOutT>
__global__ void __launch_bounds__(kThreads) CastTransposeKernel(Fp8CastArgs a) {
  __shared__ uint8_t tile[kTile][kTile + kTilePad];
  const float scale = ResolveScale<F>(a);
  const T* in = static_cast<const T*>(a.input);
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int lc = (threadIdx.x % (kTile / kVec)) * kVec;
  Stats st;
#pragma unroll
  for (int pass = 0; pass < kTile * kTile / (kThreads * kVec); ++pass) {
    const int lr = pass * (kThreads * kVec / kTile) + threadIdx.x / (kTile / kVec);
    const int64_t r = r0 + lr, c = c0 + lc;
    if (r >= a.rows) continue;
    uint8_t code[kVec];
    if (kVecIn && c + kVec <= a.cols) {
      float x[kVec];
      LoadVec(in, r * a.cols + c, x);
#pragma unroll
      for (int k = 0; k < kVec; k += 2) {
        const uint16_t p = EncodePair<F>(x[k] * scale, x[k + 1] * scale);
        code[k] = p & 0xFF;
        code[k + 1] = p >> 8;
        st.Add(x[k], code[k]);
        st.Add(x[k + 1], code[k + 1]);
      }
      if (a.out != nullptr) {
        uint2 packed;
        packed.x = code[0] | (code[1] << 8) | (code[2] << 16) | (static_cast<uint32_t>(code[3]) << 24);
        packed.y = code[4] | (code[5] << 8) | (code[6] << 16) | (static_cast<uint32_t>(code[7]) << 24);
        *reinterpret_cast<uint2*>(a.out + r * a.cols + c) = packed;
      }
    } else {
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        code[k] = 0;
        if (c + k < a.cols) {
          const float x = LoadScalar(in, r * a.cols + c + k);
          code[k] = EncodeOne<F>(x * scale);
          st.Add(x, code[k]);
          if (a.out != nullptr) a.out[r * a.cols + c + k] = code[k];
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) tile[lr][lc + k] = code[k];
  }
  __syncthreads();
  if (a.out_t != nullptr) {
    const int tc = threadIdx.x / 4;          // output row within the tile
    const int tr = (threadIdx.x % 4) * 16;   // first of 16 output bytes
    const int64_t orow = c0 + tc;
    const int64_t ocol = r0 + tr;
    if (orow < a.cols) {
      uint8_t* dst = a.out_t + orow * a.rows + ocol;
      if (kVecOutT && ocol + 16 <= a.rows) {
        uint32_t w[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          w[q] = tile[tr + 4 * q][tc] | (tile[tr + 4 * q + 1][tc] << 8) |
                 (tile[tr + 4 * q + 2][tc] << 16) |
                 (static_cast<uint32_t>(tile[tr + 4 * q + 3][tc]) << 24);
        }
        *reinterpret_cast<uint4*>(dst) = make_uint4(w[0], w[1], w[2], w[3]);
      } else {
        for (int k = 0; k < 16 && ocol + k < a.rows; ++k) dst[k] = tile[tr + k][tc];
      }
    }
  }
  FlushStats(st, a.amax_out, a.underflow_out);
}

template <typename T, bool kVectorized>
__global__ void __launch_bounds__(kThreads) AmaxKernel(const T* in, int64_t n, float* amax) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  Stats st;
  int64_t tail_start = 0;
  if constexpr (kVectorized) {
    const int64_t nvec = n / kVec;
    for (int64_t v = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; v < nvec; v += stride) {
      float x[kVec];
      LoadVec(in, v * kVec, x);
#pragma unroll
      for (int k = 0; k < kVec; ++k) st.amax = fmaxf(st.amax, fabsf(x[k]));
    }
    tail_start = nvec * kVec;
  }
  for (int64_t i = tail_start + static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += stride) {
    st.amax = fmaxf(st.amax, fabsf(LoadScalar(in, i)));
  }
  FlushStats(st, amax, nullptr);
}

bool Aligned(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

int FlatBlocks(int64_t work_items) {
  // Enough blocks to fill an H100/H200 several times over; the grid-stride
  // loops cover the rest with one atomic per block.
  const int64_t b = (work_items + kThreads - 1) / kThreads;
  return static_cast<int>(b < 1 ? 1 : (b > 8192 ? 8192 : b));
}

template <typename T, Fp8Format F>
cudaError_t LaunchCast(const Fp8CastArgs& a, cudaStream_t stream) {
  const int64_t n = a.rows * a.cols;
  const int elem = sizeof(T);
  if (a.out_t == nullptr) {
    const bool vec = Aligned(a.input, 16) && (a.out == nullptr || Aligned(a.out, 8));
    if (vec) {
      CastKernel<T, F, true><<<FlatBlocks(n / kVec + 1), kThreads, 0, stream>>>(a);
    } else {
      CastKernel<T, F, false><<<FlatBlocks(n), kThreads, 0, stream>>>(a);
    }
    return cudaGetLastError();
  }
  const bool vec_in = Aligned(a.input, 16) && (a.cols * elem) % 16 == 0 &&
                      (a.out == nullptr || (Aligned(a.out, 8) && a.cols % 8 == 0));
  const bool vec_out_t = Aligned(a.out_t, 16) && a.rows % 16 == 0;
  const dim3 grid(static_cast<unsigned>((a.cols + kTile - 1) / kTile),
                  static_cast<unsigned>((a.rows + kTile - 1) / kTile));
  if (grid.y > 65535) return cudaErrorInvalidConfiguration;
  if (vec_in && vec_out_t) {
    CastTransposeKernel<T, F, true, true><<<grid, kThreads, 0, stream>>>(a);
  } else if (vec_in) {
    CastTransposeKernel<T, F, true, false><<<grid, kThreads, 0, stream>>>(a);
  } else if (vec_out_t) {
    CastTransposeKernel<T, F, false, true><<<grid, kThreads, 0, stream>>>(a);
  } else {
    CastTransposeKernel<T, F, false, false><<<grid, kThreads, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchCastFormat(const Fp8CastArgs& a, cudaStream_t stream) {
  return a.format == Fp8Format::kE4M3 ? LaunchCast<T, Fp8Format::kE4M3>(a, stream)
                                      : LaunchCast<T, Fp8Format::kE5M2>(a, stream);
}

}  // namespace

cudaError_t Fp8Amax(const void* input, Fp8InputType type, int64_t n, float* amax,
                    cudaStream_t stream) {
  cudaError_t err = cudaMemsetAsync(amax, 0, sizeof(float), stream);
  if (err != cudaSuccess || n == 0) return err;
  const bool vec = Aligned(input, 16);
  if (type == Fp8InputType::kFloat32) {
    const float* p = static_cast<const float*>(input);
    if (vec) {
      AmaxKernel<float, true><<<FlatBlocks(n / kVec + 1), kThreads, 0, stream>>>(p, n, amax);
    } else {
      AmaxKernel<float, false><<<FlatBlocks(n), kThreads, 0, stream>>>(p, n, amax);
    }
  } else {
    const __nv_bfloat16* p = static_cast<const __nv_bfloat16*>(input);
    if (vec) {
      AmaxKernel<__nv_bfloat16, true><<<FlatBlocks(n / kVec + 1), kThreads, 0, stream>>>(p, n, amax);
    } else {
      AmaxKernel<__nv_bfloat16, false><<<FlatBlocks(n), kThreads, 0, stream>>>(p, n, amax);
    }
  }
  return cudaGetLastError();
}

cudaError_t Fp8CastScaled(const Fp8CastArgs& a, cudaStream_t stream) {
  if ((a.scale == nullptr) == (a.amax_for_scale == nullptr)) return cudaErrorInvalidValue;
  if (a.rows < 0 || a.cols < 0) return cudaErrorInvalidValue;
  cudaError_t err = cudaSuccess;
  if (!a.accumulate && a.amax_out != nullptr) {
    err = cudaMemsetAsync(a.amax_out, 0, sizeof(float), stream);
  }
  if (err == cudaSuccess && !a.accumulate && a.underflow_out != nullptr) {
    err = cudaMemsetAsync(a.underflow_out, 0, sizeof(unsigned long long), stream);
  }
  if (err != cudaSuccess) return err;
  if (a.rows * a.cols == 0) return cudaSuccess;
  return a.input_type == Fp8InputType::kFloat32 ? LaunchCastFormat<float>(a, stream)
                                                : LaunchCastFormat<__nv_bfloat16>(a, stream);
}

}  // namespace kp::kernels
