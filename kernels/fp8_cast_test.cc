#include "kernels/fp8_cast.h"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <cuda_fp8.h>
#include <gtest/gtest.h>

#include "kernels/fp8_math.h"
#include "kernels/gpu_test_util.h"

namespace kp::kernels {
namespace {

constexpr Fp8Format E4 = Fp8Format::kE4M3;
constexpr Fp8Format E5 = Fp8Format::kE5M2;
const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

float Bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Encodings worked out by hand from the OCP FP8 tables.
TEST(Fp8Encode, E4M3HandComputed) {
  EXPECT_EQ(Fp8EncodeReference(1.0f, E4), 0x38);
  EXPECT_EQ(Fp8EncodeReference(-2.0f, E4), 0xC0);
  EXPECT_EQ(Fp8EncodeReference(448.0f, E4), 0x7E);
  // Round to nearest even between 1.0 (m=0) and 1.125 (m=1): the tie goes to m=0;
  // between 1.125 and 1.25 to m=2.
  EXPECT_EQ(Fp8EncodeReference(1.0625f, E4), 0x38);
  EXPECT_EQ(Fp8EncodeReference(1.1875f, E4), 0x3A);
  EXPECT_EQ(Fp8EncodeReference(1.07f, E4), 0x39);
  // Saturation: beyond 448, including the would-be 480, and Inf.
  EXPECT_EQ(Fp8EncodeReference(449.0f, E4), 0x7E);
  EXPECT_EQ(Fp8EncodeReference(464.0f, E4), 0x7E);
  EXPECT_EQ(Fp8EncodeReference(1e30f, E4), 0x7E);
  EXPECT_EQ(Fp8EncodeReference(-1e30f, E4), 0xFE);
  EXPECT_EQ(Fp8EncodeReference(kInf, E4), 0x7E);
  EXPECT_EQ(Fp8EncodeReference(-kInf, E4), 0xFE);
  // NaN of either sign becomes the canonical 0x7F.
  EXPECT_EQ(Fp8EncodeReference(kNaN, E4), 0x7F);
  EXPECT_EQ(Fp8EncodeReference(-kNaN, E4), 0x7F);
  // Subnormals: 2^-9 is the smallest; 2^-10 is the tie with zero (even: 0).
  EXPECT_EQ(Fp8EncodeReference(std::ldexp(1.0f, -9), E4), 0x01);
  EXPECT_EQ(Fp8EncodeReference(std::ldexp(1.0f, -10), E4), 0x00);
  EXPECT_EQ(Fp8EncodeReference(-std::ldexp(1.0f, -10), E4), 0x80);
  EXPECT_EQ(Fp8EncodeReference(std::ldexp(1.5f, -10), E4), 0x01);
  EXPECT_EQ(Fp8EncodeReference(std::ldexp(3.0f, -10), E4), 0x02);  // tie 1|2 -> 2
  EXPECT_EQ(Fp8EncodeReference(std::ldexp(7.0f, -9), E4), 0x07);
  EXPECT_EQ(Fp8EncodeReference(std::ldexp(15.0f, -10), E4), 0x08);  // carries into normal
  EXPECT_EQ(Fp8EncodeReference(std::ldexp(1.0f, -6), E4), 0x08);    // smallest normal
  // Zeros and fp32 subnormals.
  EXPECT_EQ(Fp8EncodeReference(0.0f, E4), 0x00);
  EXPECT_EQ(Fp8EncodeReference(-0.0f, E4), 0x80);
  EXPECT_EQ(Fp8EncodeReference(Bits(0x00000001u), E4), 0x00);
  EXPECT_EQ(Fp8EncodeReference(-1e-30f, E4), 0x80);
}

TEST(Fp8Encode, E5M2HandComputed) {
  EXPECT_EQ(Fp8EncodeReference(1.0f, E5), 0x3C);
  EXPECT_EQ(Fp8EncodeReference(-1.5f, E5), 0xBE);
  EXPECT_EQ(Fp8EncodeReference(57344.0f, E5), 0x7B);
  EXPECT_EQ(Fp8EncodeReference(61440.0f, E5), 0x7B);  // the tie with 65536 (Inf) saturates
  EXPECT_EQ(Fp8EncodeReference(1e30f, E5), 0x7B);
  EXPECT_EQ(Fp8EncodeReference(kInf, E5), 0x7B);
  EXPECT_EQ(Fp8EncodeReference(-kInf, E5), 0xFB);
  EXPECT_EQ(Fp8EncodeReference(kNaN, E5), 0x7F);
  EXPECT_EQ(Fp8EncodeReference(std::ldexp(1.0f, -16), E5), 0x01);
  EXPECT_EQ(Fp8EncodeReference(std::ldexp(1.0f, -17), E5), 0x00);
  EXPECT_EQ(Fp8EncodeReference(std::ldexp(3.0f, -17), E5), 0x02);
  EXPECT_EQ(Fp8EncodeReference(std::ldexp(1.0f, -14), E5), 0x04);
  EXPECT_EQ(Fp8EncodeReference(1.125f, E5), 0x3C);  // tie 1.0|1.25 -> even (1.0)
  EXPECT_EQ(Fp8EncodeReference(1.375f, E5), 0x3E);  // tie 1.25|1.5 -> even (1.5)
}

// NVIDIA's host emulation of cvt.rn.satfinite (cuda_fp8.hpp, double based) as
// an independent oracle, over every bf16 value and many scaled fp32 values.
uint8_t NvidiaHost(float x, Fp8Format f) {
  if (std::isnan(x)) return kFp8CanonicalNaN;
  return __nv_cvt_float_to_fp8(x, __NV_SATFINITE, f == E4 ? __NV_E4M3 : __NV_E5M2);
}

TEST(Fp8Encode, MatchesNvidiaHostEmulationOnAllBf16Values) {
  for (Fp8Format f : {E4, E5}) {
    for (uint32_t b = 0; b < 65536; ++b) {
      const float x = Bf16BitsToFloat(static_cast<uint16_t>(b));
      ASSERT_EQ(Fp8EncodeReference(x, f), NvidiaHost(x, f)) << "bf16 bits " << b << " fmt " << int(f);
    }
  }
}

TEST(Fp8Encode, MatchesNvidiaHostEmulationOnRandomFloats) {
  std::mt19937 gen(7);
  std::uniform_int_distribution<uint32_t> exp_bits(90, 160);  // 2^-37 .. 2^33
  std::uniform_int_distribution<uint32_t> any(0, 0xFFFFFFFFu);
  for (int i = 0; i < 400000; ++i) {
    const uint32_t u = (any(gen) & 0x807FFFFFu) | (exp_bits(gen) << 23);
    const float x = Bits(u);
    for (Fp8Format f : {E4, E5}) ASSERT_EQ(Fp8EncodeReference(x, f), NvidiaHost(x, f)) << x;
  }
}

TEST(Fp8Decode, EveryCodeRoundTrips) {
  for (Fp8Format f : {E4, E5}) {
    for (int c = 0; c < 256; ++c) {
      const float v = Fp8DecodeReference(static_cast<uint8_t>(c), f);
      if (std::isnan(v)) {
        EXPECT_EQ(Fp8EncodeReference(v, f), kFp8CanonicalNaN);
      } else if (std::isinf(v)) {
        EXPECT_EQ(f, E5);
        EXPECT_EQ(Fp8EncodeReference(v, f), (c & 0x80) | 0x7B);  // Inf saturates
      } else {
        EXPECT_EQ(Fp8EncodeReference(v, f), c) << "code " << c << " fmt " << int(f);
      }
    }
  }
  EXPECT_EQ(Fp8DecodeReference(0x7E, E4), 448.0f);
  EXPECT_EQ(Fp8DecodeReference(0x7B, E5), 57344.0f);
  EXPECT_EQ(Fp8DecodeReference(0x01, E4), std::ldexp(1.0f, -9));
}

TEST(Fp8Scale, RuleHandlesZeroInfNaNAndMargin) {
  EXPECT_FLOAT_EQ(Fp8ScaleFromAmax(2.0f, 448.0f, 0, 1.0f), 224.0f);
  EXPECT_FLOAT_EQ(Fp8ScaleFromAmax(2.0f, 448.0f, 2, 1.0f), 56.0f);
  EXPECT_FLOAT_EQ(Fp8ScaleFromAmax(2.0f, 448.0f, -1, 1.0f), 448.0f);
  // All-zero tensor: no division by zero, the fallback is kept.
  EXPECT_EQ(Fp8ScaleFromAmax(0.0f, 448.0f, 0, 3.5f), 3.5f);
  EXPECT_EQ(Fp8ScaleFromAmax(kInf, 448.0f, 0, 3.5f), 3.5f);
  EXPECT_EQ(Fp8ScaleFromAmax(kNaN, 448.0f, 0, 3.5f), 3.5f);
  // A tiny (fp32 subnormal) amax overflows the quotient: clamp to FLT_MAX.
  EXPECT_EQ(Fp8ScaleFromAmax(Bits(0x00000010u), 448.0f, 0, 1.0f), FLT_MAX);
}

std::vector<float> RandomWithOutliers(int64_t n, uint32_t seed, bool specials) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 999);
  std::vector<float> v(n);
  for (auto& x : v) {
    x = normal(gen);
    const int p = pick(gen);
    if (p < 5) x *= 1e4f;            // outliers that saturate at small scales
    else if (p < 15) x *= 1e-6f;     // values that underflow
    else if (specials && p == 20) x = kNaN;
    else if (specials && p == 21) x = x < 0 ? -kInf : kInf;
    else if (specials && p == 22) x = 0.0f;
  }
  return v;
}

TEST(Fp8CastReference, TransposedCopyMatchesAndStatsAreCounted) {
  const int64_t rows = 37, cols = 45;
  std::vector<float> x = RandomWithOutliers(rows * cols, 3, false);
  std::vector<uint8_t> out(rows * cols), out_t(rows * cols);
  const float scale = 0.5f;
  float amax = -1, scale_out = 0, scale_inv = 0;
  unsigned long long underflow = 0;
  Fp8CastArgs a;
  a.input = x.data();
  a.input_type = Fp8InputType::kFloat32;
  a.rows = rows, a.cols = cols, a.format = E4;
  a.out = out.data(), a.out_t = out_t.data();
  a.scale = &scale;
  a.amax_out = &amax, a.underflow_out = &underflow, a.scale_out = &scale_out,
  a.scale_inv_out = &scale_inv;
  Fp8CastReference(a);
  float want_amax = 0;
  unsigned long long want_under = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float v = x[r * cols + c];
      const uint8_t code = Fp8EncodeReference(v * scale, E4);
      ASSERT_EQ(out[r * cols + c], code);
      ASSERT_EQ(out_t[c * rows + r], code);
      want_amax = std::max(want_amax, std::fabs(v));
      if (v != 0 && std::fabs(Fp8DecodeReference(code, E4)) == 0) ++want_under;
    }
  }
  EXPECT_EQ(amax, want_amax);
  EXPECT_EQ(underflow, want_under);
  EXPECT_GT(underflow, 0u);
  EXPECT_EQ(scale_out, scale);
  EXPECT_EQ(scale_inv, 2.0f);
}

TEST(Fp8CastReference, AllZeroTensorWithCurrentScalingKeepsUnitScale) {
  std::vector<uint16_t> x(64 * 16, FloatToBf16Bits(0.0f));
  const float amax = Fp8AmaxReference(x.data(), Fp8InputType::kBFloat16, x.size());
  EXPECT_EQ(amax, 0.0f);
  std::vector<uint8_t> out(x.size(), 0xAA);
  float scale = 0, scale_inv = 0;
  unsigned long long underflow = 99;
  Fp8CastArgs a;
  a.input = x.data(), a.input_type = Fp8InputType::kBFloat16;
  a.rows = 64, a.cols = 16, a.format = E4, a.out = out.data();
  a.amax_for_scale = &amax;
  a.scale_out = &scale, a.scale_inv_out = &scale_inv, a.underflow_out = &underflow;
  Fp8CastReference(a);
  EXPECT_EQ(scale, 1.0f);
  EXPECT_EQ(scale_inv, 1.0f);
  EXPECT_EQ(underflow, 0u);
  for (uint8_t c : out) ASSERT_EQ(c, 0x00);
}

TEST(Fp8CastReference, CurrentScalingMapsAmaxToFormatMax) {
  std::vector<float> x = RandomWithOutliers(1000, 4, false);
  const float amax = Fp8AmaxReference(x.data(), Fp8InputType::kFloat32, x.size());
  std::vector<uint8_t> out(x.size());
  Fp8CastArgs a;
  a.input = x.data(), a.input_type = Fp8InputType::kFloat32;
  a.rows = 1, a.cols = 1000, a.format = E5, a.out = out.data(), a.amax_for_scale = &amax;
  Fp8CastReference(a);
  uint8_t max_code = 0;
  for (uint8_t c : out) max_code = std::max<uint8_t>(max_code, c & 0x7F);
  EXPECT_EQ(max_code, 0x7B);  // the largest element lands on 57344 exactly
}

TEST(Fp8CastReference, AccumulateKeepsTheRunningMaxAndCount) {
  const float scale = 1.0f;
  float amax = 0.0f;
  unsigned long long under = 0;
  Fp8CastArgs a;
  a.input_type = Fp8InputType::kFloat32;
  a.rows = 1, a.format = E4, a.scale = &scale, a.accumulate = true;
  a.amax_out = &amax, a.underflow_out = &under;
  const std::vector<float> first = {1.0f, -3.0f, 1e-6f}, second = {2.0f, 1e-7f, -1e-8f};
  a.input = first.data(), a.cols = 3;
  Fp8CastReference(a);
  a.input = second.data();
  Fp8CastReference(a);
  EXPECT_EQ(amax, 3.0f);
  EXPECT_EQ(under, 3u);
  a.accumulate = false;
  Fp8CastReference(a);
  EXPECT_EQ(amax, 2.0f);
  EXPECT_EQ(under, 2u);
}

// ---- GPU: kernel vs reference, bit for bit ----

struct DeviceBuf {
  void* p = nullptr;
  explicit DeviceBuf(size_t bytes) {
    if (cudaMalloc(&p, bytes < 1 ? 1 : bytes) != cudaSuccess) p = nullptr;
  }
  ~DeviceBuf() { cudaFree(p); }
  template <typename T>
  T* as() { return static_cast<T*>(p); }
};

struct GpuCase {
  int64_t rows, cols;
  Fp8InputType type;
  Fp8Format format;
  bool transpose, with_out, current;
  int64_t offset_elems;  // misaligns the input to force the scalar path
};

std::string Name(const GpuCase& c) {
  return std::to_string(c.rows) + "x" + std::to_string(c.cols) +
         (c.type == Fp8InputType::kFloat32 ? " f32" : " bf16") + (c.format == E4 ? " e4m3" : " e5m2") +
         (c.transpose ? " T" : "") + (c.with_out ? " out" : "") + (c.current ? " current" : " delayed") +
         " off" + std::to_string(c.offset_elems);
}

void RunGpuCase(const GpuCase& c, uint32_t seed) {
  SCOPED_TRACE(Name(c));
  const int64_t n = c.rows * c.cols;
  std::vector<float> xf = RandomWithOutliers(n, seed, true);
  std::vector<uint16_t> xb(n);
  for (int64_t i = 0; i < n; ++i) {
    xb[i] = FloatToBf16Bits(xf[i]);
    if (c.type == Fp8InputType::kBFloat16) xf[i] = Bf16BitsToFloat(xb[i]);
  }
  const size_t elem = c.type == Fp8InputType::kFloat32 ? 4 : 2;
  const void* host_in = c.type == Fp8InputType::kFloat32 ? static_cast<const void*>(xf.data())
                                                        : static_cast<const void*>(xb.data());
  DeviceBuf in((n + c.offset_elems) * elem), out(n), out_t(n), amax(4), amax_pre(4), scale(4),
      scale_out(4), scale_inv(4), under(8);
  ASSERT_TRUE(in.p && out.p && out_t.p && amax.p && amax_pre.p && scale.p && scale_out.p && scale_inv.p &&
              under.p);
  char* in_ptr = in.as<char>() + c.offset_elems * elem;
  KP_CUDA_OK(cudaMemcpy(in_ptr, host_in, n * elem, cudaMemcpyHostToDevice));
  const float delayed_scale = 3.7f;  // not a power of two: the multiply rounds
  KP_CUDA_OK(cudaMemcpy(scale.p, &delayed_scale, 4, cudaMemcpyHostToDevice));

  Fp8CastArgs a;
  a.input = in_ptr, a.input_type = c.type, a.rows = c.rows, a.cols = c.cols, a.format = c.format;
  a.out = c.with_out ? out.as<uint8_t>() : nullptr;
  a.out_t = c.transpose ? out_t.as<uint8_t>() : nullptr;
  a.margin = 1;
  if (c.current) {
    KP_CUDA_OK(Fp8Amax(in_ptr, c.type, n, amax_pre.as<float>(), nullptr));
    a.amax_for_scale = amax_pre.as<float>();
  } else {
    a.scale = scale.as<float>();
  }
  a.amax_out = amax.as<float>(), a.underflow_out = under.as<unsigned long long>();
  a.scale_out = scale_out.as<float>(), a.scale_inv_out = scale_inv.as<float>();
  KP_CUDA_OK(Fp8CastScaled(a, nullptr));
  KP_CUDA_OK(cudaDeviceSynchronize());

  std::vector<uint8_t> got(n), got_t(n), want(n), want_t(n);
  float got_amax, got_pre, got_scale, got_inv, want_amax, want_scale, want_inv;
  unsigned long long got_under, want_under;
  KP_CUDA_OK(cudaMemcpy(got.data(), out.p, n, cudaMemcpyDeviceToHost));
  KP_CUDA_OK(cudaMemcpy(got_t.data(), out_t.p, n, cudaMemcpyDeviceToHost));
  KP_CUDA_OK(cudaMemcpy(&got_amax, amax.p, 4, cudaMemcpyDeviceToHost));
  KP_CUDA_OK(cudaMemcpy(&got_pre, amax_pre.p, 4, cudaMemcpyDeviceToHost));
  KP_CUDA_OK(cudaMemcpy(&got_scale, scale_out.p, 4, cudaMemcpyDeviceToHost));
  KP_CUDA_OK(cudaMemcpy(&got_inv, scale_inv.p, 4, cudaMemcpyDeviceToHost));
  KP_CUDA_OK(cudaMemcpy(&got_under, under.p, 8, cudaMemcpyDeviceToHost));

  const float ref_amax = Fp8AmaxReference(host_in, c.type, n);
  Fp8CastArgs r = a;
  r.input = host_in, r.out = want.data(), r.out_t = want_t.data();
  r.scale = c.current ? nullptr : &delayed_scale;
  r.amax_for_scale = c.current ? &ref_amax : nullptr;
  r.amax_out = &want_amax, r.underflow_out = &want_under, r.scale_out = &want_scale,
  r.scale_inv_out = &want_inv;
  Fp8CastReference(r);

  if (c.current) {
    EXPECT_EQ(got_pre, ref_amax);
  }
  EXPECT_EQ(got_amax, want_amax);
  EXPECT_EQ(got_under, want_under);
  EXPECT_EQ(got_scale, want_scale);
  EXPECT_EQ(got_inv, want_inv);
  for (int64_t i = 0; i < n && c.with_out; ++i) {
    ASSERT_EQ(int(got[i]), int(want[i])) << "out[" << i << "] x=" << xf[i];
  }
  for (int64_t i = 0; i < n && c.transpose; ++i) {
    ASSERT_EQ(int(got_t[i]), int(want_t[i])) << "out_t[" << i << "]";
  }
}

TEST(Fp8CastCuda, MatchesReferenceBitwise) {
  KP_SKIP_WITHOUT_GPU();
  uint32_t seed = 100;
  for (Fp8InputType t : {Fp8InputType::kBFloat16, Fp8InputType::kFloat32}) {
    for (Fp8Format f : {E4, E5}) {
      for (bool current : {false, true}) {
        RunGpuCase({256, 2048, t, f, false, true, current, 0}, ++seed);    // vectorized flat
        RunGpuCase({1, 1003, t, f, false, true, current, 0}, ++seed);      // vector body + tail
        RunGpuCase({7, 13, t, f, false, true, current, 1}, ++seed);        // misaligned: scalar
        RunGpuCase({512, 384, t, f, true, true, current, 0}, ++seed);      // tiles, all vector
        RunGpuCase({130, 72, t, f, true, true, current, 0}, ++seed);       // ragged tiles
        RunGpuCase({100, 37, t, f, true, false, current, 1}, ++seed);      // scalar, out_t only
      }
    }
  }
}

TEST(Fp8CastCuda, AllZeroInputKeepsUnitScaleUnderCurrentScaling) {
  KP_SKIP_WITHOUT_GPU();
  const int64_t n = 4096;
  DeviceBuf in(n * 2), out(n), amax(4), scale(4);
  ASSERT_TRUE(in.p && out.p && amax.p && scale.p);
  KP_CUDA_OK(cudaMemset(in.p, 0, n * 2));
  KP_CUDA_OK(Fp8Amax(in.p, Fp8InputType::kBFloat16, n, amax.as<float>(), nullptr));
  Fp8CastArgs a;
  a.input = in.p, a.rows = 64, a.cols = 64, a.out = out.as<uint8_t>();
  a.amax_for_scale = amax.as<float>(), a.scale_out = scale.as<float>();
  KP_CUDA_OK(Fp8CastScaled(a, nullptr));
  float s = 0;
  KP_CUDA_OK(cudaMemcpy(&s, scale.p, 4, cudaMemcpyDeviceToHost));
  EXPECT_EQ(s, 1.0f);
}

}  // namespace
}  // namespace kp::kernels
