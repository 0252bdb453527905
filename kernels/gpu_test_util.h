// Helpers for tests that need a GPU: they skip, saying why, where none is.
#ifndef KP_KERNELS_GPU_TEST_UTIL_H_
#define KP_KERNELS_GPU_TEST_UTIL_H_

#include <string>

#include <cuda_runtime_api.h>

namespace kp::testing {

// Empty when a CUDA device is usable; otherwise the reason it is not.
inline std::string NoGpuReason() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    return std::string("no usable CUDA device: ") + cudaGetErrorString(err);
  }
  if (count == 0) return "no CUDA device on this machine";
  return "";
}

}  // namespace kp::testing

// Skips the current test, with the reason, when there is no GPU.
#define KP_SKIP_WITHOUT_GPU()                                   \
  do {                                                          \
    const std::string kp_reason_ = ::kp::testing::NoGpuReason(); \
    if (!kp_reason_.empty()) GTEST_SKIP() << kp_reason_;        \
  } while (0)

#define KP_CUDA_OK(expr)                                                      \
  do {                                                                        \
    cudaError_t kp_err_ = (expr);                                             \
    ASSERT_EQ(kp_err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(kp_err_); \
  } while (0)

#endif  // KP_KERNELS_GPU_TEST_UTIL_H_
