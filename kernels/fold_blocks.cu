#include <cuda_bf16.h>

#include "kernels/fold_blocks.h"
#include "kernels/fold_math.h"

namespace kp::kernels {
namespace {

template <int kVec>
struct Vec {
  float v[kVec];
};

// kVec consecutive elements as float; with kVec = 4 one 16-byte (fp32) or
// 8-byte (bf16) load, the host having checked the alignment.
template <int kVec>
__device__ __forceinline__ Vec<kVec> LoadVec(const void* base, DType dt, int64_t offset) {
  Vec<kVec> r;
  if (dt == DType::kFloat32) {
    const float* p = static_cast<const float*>(base) + offset;
    if constexpr (kVec == 4) {
      const float4 x = *reinterpret_cast<const float4*>(p);
      r.v[0] = x.x, r.v[1] = x.y, r.v[2] = x.z, r.v[3] = x.w;
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) r.v[i] = p[i];
    }
  } else {
    const __nv_bfloat16* p = static_cast<const __nv_bfloat16*>(base) + offset;
    if constexpr (kVec == 4) {
      const uint2 raw = *reinterpret_cast<const uint2*>(p);
      const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
      const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
      r.v[0] = a.x, r.v[1] = a.y, r.v[2] = b.x, r.v[3] = b.y;
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) r.v[i] = __bfloat162float(p[i]);
    }
  }
  return r;
}

template <int kVec>
__device__ __forceinline__ void StoreVec(void* base, DType dt, int64_t offset,
                                         const Vec<kVec>& x) {
  if (dt == DType::kFloat32) {
    float* p = static_cast<float*>(base) + offset;
    if constexpr (kVec == 4) {
      *reinterpret_cast<float4*>(p) = make_float4(x.v[0], x.v[1], x.v[2], x.v[3]);
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) p[i] = x.v[i];
    }
  } else {
    __nv_bfloat16* p = static_cast<__nv_bfloat16*>(base) + offset;
    if constexpr (kVec == 4) {
      const __nv_bfloat162 a = __floats2bfloat162_rn(x.v[0], x.v[1]);
      const __nv_bfloat162 b = __floats2bfloat162_rn(x.v[2], x.v[3]);
      uint2 raw;
      raw.x = *reinterpret_cast<const unsigned*>(&a);
      raw.y = *reinterpret_cast<const unsigned*>(&b);
      *reinterpret_cast<uint2*>(p) = raw;
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) p[i] = __float2bfloat16_rn(x.v[i]);
    }
  }
}

__device__ __forceinline__ int64_t At(const Strides3& s, int64_t b, int64_t h, int64_t t) {
  return b * s.b + h * s.h + t * s.t;
}

// One warp per (b, h, t) row; each lane owns kVec-element groups of the row,
// reads every covering block's group, and writes the folded group once.
template <int kVec>
__global__ void FoldKernel(const FoldArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (row >= a.batch * a.heads * a.rows) return;
  const int64_t t = row % a.rows;
  const int64_t h = (row / a.rows) % a.heads;
  const int64_t b = row / (a.rows * a.heads);

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
  for (int i = lane * kVec; i < a.dim; i += 32 * kVec) {
    Vec<kVec> acc;
#pragma unroll
    for (int e = 0; e < kVec; ++e) acc.v[e] = 0.0f;
    for (int j = 0; j < n; ++j) {
      const FoldBlock& blk = a.blocks[covering[j]];
      if (weight[j] == 0.0f) continue;  // also keeps NaN-free zeros of empty rows
      const Vec<kVec> x =
          LoadVec<kVec>(blk.data, blk.dtype, At(blk.strides, b, h, t - blk.row_offset) + i);
#pragma unroll
      for (int e = 0; e < kVec; ++e) acc.v[e] = fmaf(weight[j], x.v[e], acc.v[e]);
    }
    StoreVec<kVec>(a.out, a.out_dtype, out_base + i, acc);
  }
  if (a.kind == FoldKind::kLseMerge) {
    __syncwarp();  // every lane has read the row's lse values (out_lse may be one)
    if (lane == 0) a.out_lse[At(a.out_lse_strides, b, h, t)] = lse;
  }
}

bool Aligned(const void* p, DType dt, const Strides3& s, int vec) {
  const int64_t elem = dt == DType::kFloat32 ? 4 : 2;
  return reinterpret_cast<uintptr_t>(p) % (elem * vec) == 0 && s.b % vec == 0 &&
         s.h % vec == 0 && s.t % vec == 0;
}

}  // namespace

cudaError_t FoldBlocks(const FoldArgs& args, cudaStream_t stream) {
  if (args.num_blocks < 0 || args.num_blocks > kMaxFoldBlocks) return cudaErrorInvalidValue;
  const int64_t rows = args.batch * args.heads * args.rows;
  if (rows == 0 || args.dim == 0) return cudaSuccess;
  bool vec4 = args.dim % 4 == 0 && Aligned(args.out, args.out_dtype, args.out_strides, 4);
  for (int i = 0; i < args.num_blocks; ++i) {
    const FoldBlock& blk = args.blocks[i];
    vec4 = vec4 && Aligned(blk.data, blk.dtype, blk.strides, 4);
  }
  constexpr int kThreads = 256;
  const int64_t blocks = (rows * 32 + kThreads - 1) / kThreads;
  if (vec4) {
    FoldKernel<4><<<blocks, kThreads, 0, stream>>>(args);
  } else {
    FoldKernel<1><<<blocks, kThreads, 0, stream>>>(args);
  }
  return cudaGetLastError();
}

}  // namespace kp::kernels
