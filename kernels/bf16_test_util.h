// Host-side helpers for the bf16 kernel tests: device buffers, bf16 rounding
// of random inputs, the bf16 comparison rule, and a timing loop that reports
// achieved bandwidth.
#ifndef KP_KERNELS_BF16_TEST_UTIL_H_
#define KP_KERNELS_BF16_TEST_UTIL_H_

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

namespace kp::kernels::testing {

// A device allocation freed on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) {
    if (cudaMalloc(&ptr_, bytes == 0 ? 16 : bytes) != cudaSuccess) ptr_ = nullptr;
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
};

// Random normal values rounded to bf16: `bits` for the device, `values` the
// same numbers as float for the reference.
struct Bf16Data {
  std::vector<__nv_bfloat16> bits;
  std::vector<float> values;
};

inline Bf16Data RandomBf16(size_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, stddev);
  Bf16Data d;
  d.bits.resize(n);
  d.values.resize(n);
  for (size_t i = 0; i < n; ++i) {
    d.bits[i] = __float2bfloat16(dist(gen));
    d.values[i] = __bfloat162float(d.bits[i]);
  }
  return d;
}

inline std::vector<float> ToFloat(const std::vector<__nv_bfloat16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
  return out;
}

// The kernels compute in fp32 and round the result to bf16 once: they must
// agree with the fp32 reference to one bf16 rounding (2^-9 relative; we allow
// 2^-8) plus an absolute 1e-5 for fp32 rounding differences (FMA contraction,
// __expf) in results that cancel to near zero.
inline ::testing::AssertionResult Bf16Close(const std::vector<float>& got,
                                            const std::vector<float>& want,
                                            const std::string& what) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << what << ": size differs";
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = std::ldexp(std::abs(want[i]), -8) + 1e-5;
    if (!(std::abs(got[i] - want[i]) <= tol)) {
      return ::testing::AssertionFailure()
             << what << "[" << i << "]: got " << got[i] << ", want " << want[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// Runs `launch` a few times to warm up, then times `iters` runs with CUDA
// events and prints bytes moved / time. Returns GB/s (0 on a CUDA error).
inline double MeasureBandwidth(const std::string& name, double bytes,
                               const std::function<cudaError_t()>& launch, int iters = 50) {
  for (int i = 0; i < 5; ++i) {
    if (launch() != cudaSuccess) return 0;
  }
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaEventRecord(start);
  for (int i = 0; i < iters; ++i) launch();
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  if (cudaGetLastError() != cudaSuccess || ms <= 0) return 0;
  const double seconds = ms / 1e3 / iters;
  const double gbps = bytes / seconds / 1e9;
  std::printf("[bandwidth] %s: %.1f us, %.1f MB moved, %.0f GB/s\n", name.c_str(), seconds * 1e6,
              bytes / 1e6, gbps);
  std::fflush(stdout);
  return gbps;
}

}  // namespace kp::kernels::testing

#endif  // KP_KERNELS_BF16_TEST_UTIL_H_
