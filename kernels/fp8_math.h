// FP8 scalar math shared by the CUDA cast kernels, their CPU reference and the
// scaling recipes in runtime/fp8, so every side computes the same bits.
//
// Formats (OCP FP8, as cuda_fp8.h and torch.float8_e4m3fn / float8_e5m2):
//   E4M3: bias 7, max finite 448 (0x7E), no Inf, NaN = 0x7F/0xFF,
//         smallest subnormal 2^-9.
//   E5M2: bias 15, max finite 57344 (0x7B), Inf = 0x7C, NaN = 0x7D..0x7F,
//         smallest subnormal 2^-16.
//
// Cast rules (kernel and reference agree bit for bit):
//   - round to nearest, ties to even, on the fp32 value x * scale;
//   - saturating: anything beyond ±max finite, and ±Inf, becomes ±max finite
//     (a scaled Inf is an outlier, not a reason to poison a GEMM with NaN);
//   - NaN becomes the canonical positive NaN 0x7F in both formats (the
//     hardware's NaN sign/payload is not specified, so we pin it);
//   - subnormal FP8 results are kept (no flush to zero); values that round to
//     zero keep their sign (0x00 / 0x80) and count as underflow when x != 0.
#ifndef KP_KERNELS_FP8_MATH_H_
#define KP_KERNELS_FP8_MATH_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define KP_FP8_HOST_DEVICE __host__ __device__
#else
#define KP_FP8_HOST_DEVICE
#endif

namespace kp::kernels {

enum class Fp8Format : uint8_t { kE4M3 = 0, kE5M2 = 1 };

inline constexpr uint8_t kFp8CanonicalNaN = 0x7F;

KP_FP8_HOST_DEVICE constexpr float Fp8MaxFinite(Fp8Format f) {
  return f == Fp8Format::kE4M3 ? 448.0f : 57344.0f;
}

KP_FP8_HOST_DEVICE constexpr uint8_t Fp8MaxFiniteCode(Fp8Format f) {
  return f == Fp8Format::kE4M3 ? 0x7E : 0x7B;
}

// The scale that maps `amax` onto the format's range with `margin` powers of
// two of headroom: fp8_max / (amax * 2^margin), as Transformer Engine does.
// amax == 0 (an all-zero tensor), NaN or Inf cannot define a scale: return
// `fallback` (the previous scale for delayed scaling, 1 for current scaling).
// A tiny amax whose quotient overflows gives FLT_MAX, not Inf.
// Finite and not NaN; <cmath>'s isfinite is std:: on the host only.
KP_FP8_HOST_DEVICE inline bool Fp8IsFinite(float x) { return fabsf(x) <= 3.402823466e+38f; }

KP_FP8_HOST_DEVICE inline float Fp8ScaleFromAmax(float amax, float fp8_max, int margin,
                                                 float fallback) {
  if (!(amax > 0.0f) || !Fp8IsFinite(amax)) return fallback;
  float s = ldexpf(fp8_max / amax, -margin);
  if (!Fp8IsFinite(s)) s = 3.402823466e+38f;
  if (!(s > 0.0f)) return fallback;  // a huge margin underflowed the scale
  return s;
}

// Round-to-nearest-even, saturating fp32 -> FP8 by bit manipulation. This is
// the reference the kernels are checked against; the kernels use the
// hardware cvt.rn.satfinite instruction plus the NaN canonicalisation above.
KP_FP8_HOST_DEVICE inline uint8_t Fp8EncodeReference(float x, Fp8Format f) {
  uint32_t bits;
  memcpy(&bits, &x, sizeof(bits));
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return kFp8CanonicalNaN;
  const uint8_t max_code = Fp8MaxFiniteCode(f);
  if (abs == 0x7F800000u) return sign | max_code;
  const int fexp = static_cast<int>(abs >> 23);
  // fp32 zero or subnormal (< 2^-126): far below half the smallest FP8
  // subnormal, so it rounds to a signed zero.
  if (fexp == 0) return sign;
  const int mbits = f == Fp8Format::kE4M3 ? 3 : 2;
  const int bias = f == Fp8Format::kE4M3 ? 7 : 15;
  const int e = fexp - 127;
  const uint64_t sig = (abs & 0x7FFFFFu) | 0x800000u;  // 1.m as a 24-bit integer
  const int min_normal_exp = 1 - bias;
  // The result is n * 2^q with q the quantum of the binade (fixed below the
  // normal range, which is what makes subnormals come out right).
  const int q = (e > min_normal_exp ? e : min_normal_exp) - mbits;
  const int shift = 23 + q - e;  // >= 20
  if (shift > 40) return sign;   // below a quarter quantum: rounds to zero
  uint64_t n = sig >> shift;
  const uint64_t rem = sig & ((uint64_t{1} << shift) - 1);
  const uint64_t half = uint64_t{1} << (shift - 1);
  if (rem > half || (rem == half && (n & 1))) ++n;
  if (n == 0) return sign;
  // n in [2^mbits, 2^(mbits+1)] for normals, [1, 2^mbits] for subnormals; the
  // carry of n into the next binade lands in the exponent field by itself.
  const int64_t code = ((static_cast<int64_t>(q) + mbits + bias - 1) << mbits) + static_cast<int64_t>(n);
  if (code > max_code) return sign | max_code;
  return sign | static_cast<uint8_t>(code);
}

// FP8 -> fp32, exact. E5M2 Inf decodes to Inf.
KP_FP8_HOST_DEVICE inline float Fp8DecodeReference(uint8_t code, Fp8Format f) {
  const bool neg = (code & 0x80) != 0;
  const uint8_t c = code & 0x7F;
  const int mbits = f == Fp8Format::kE4M3 ? 3 : 2;
  const int bias = f == Fp8Format::kE4M3 ? 7 : 15;
  const int exp = c >> mbits;
  const int man = c & ((1 << mbits) - 1);
  float v;
  if (f == Fp8Format::kE4M3 && c == 0x7F) {
    v = NAN;
  } else if (f == Fp8Format::kE5M2 && exp == 31) {
    v = man == 0 ? INFINITY : NAN;
  } else if (exp == 0) {
    v = ldexpf(static_cast<float>(man), 1 - bias - mbits);
  } else {
    v = ldexpf(static_cast<float>(man + (1 << mbits)), exp - bias - mbits);
  }
  return neg ? -v : v;
}

}  // namespace kp::kernels

#endif  // KP_KERNELS_FP8_MATH_H_
