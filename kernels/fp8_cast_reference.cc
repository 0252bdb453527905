#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/fp8_cast.h"
#include "kernels/fp8_math.h"

namespace kp::kernels {

float Bf16BitsToFloat(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

uint16_t FloatToBf16Bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;  // quiet NaN
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

namespace {

float Load(const void* input, Fp8InputType type, int64_t i) {
  if (type == Fp8InputType::kFloat32) return static_cast<const float*>(input)[i];
  return Bf16BitsToFloat(static_cast<const uint16_t*>(input)[i]);
}

}  // namespace

float Fp8AmaxReference(const void* input, Fp8InputType type, int64_t n) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::fmax(amax, std::fabs(Load(input, type, i)));
  return amax;
}

void Fp8CastReference(const Fp8CastArgs& a) {
  const float scale = a.amax_for_scale != nullptr
                          ? Fp8ScaleFromAmax(*a.amax_for_scale, Fp8MaxFinite(a.format), a.margin, 1.0f)
                          : *a.scale;
  float amax = 0.0f;
  unsigned long long underflow = 0;
  for (int64_t r = 0; r < a.rows; ++r) {
    for (int64_t c = 0; c < a.cols; ++c) {
      const float x = Load(a.input, a.input_type, r * a.cols + c);
      // One fp32 multiply, rounded to nearest: the kernel does the same.
      const float y = x * scale;
      const uint8_t code = Fp8EncodeReference(y, a.format);
      amax = std::fmax(amax, std::fabs(x));
      if (x != 0.0f && (code & 0x7F) == 0) ++underflow;
      if (a.out != nullptr) a.out[r * a.cols + c] = code;
      if (a.out_t != nullptr) a.out_t[c * a.rows + r] = code;
    }
  }
  if (a.amax_out != nullptr) *a.amax_out = a.accumulate ? std::fmax(*a.amax_out, amax) : amax;
  if (a.underflow_out != nullptr) {
    *a.underflow_out = a.accumulate ? *a.underflow_out + underflow : underflow;
  }
  if (a.scale_out != nullptr) *a.scale_out = scale;
  if (a.scale_inv_out != nullptr) *a.scale_inv_out = 1.0f / scale;
}

}  // namespace kp::kernels
