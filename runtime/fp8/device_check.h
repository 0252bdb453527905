// Whether this device can run FP8 GEMMs, said in words, and what a job that
// asked for FP8 does about it: fail at start with the reason, or fall back to
// BF16 when it allows that, saying so loudly. Never silently.
#ifndef KP_RUNTIME_FP8_DEVICE_CHECK_H_
#define KP_RUNTIME_FP8_DEVICE_CHECK_H_

#include <string>

#include "runtime/common/status.h"

namespace kp::fp8 {

struct Fp8DeviceInfo {
  bool is_cuda = false;
  int device_index = -1;
  int major = 0;  // compute capability
  int minor = 0;
  std::string name;  // "NVIDIA H100 80GB HBM3", or why no GPU was found
};

// FP8 tensor-core GEMMs (cuBLASLt, at::_scaled_mm) need compute capability
// >= 8.9 (Ada, Hopper and newer).
inline constexpr int kFp8MinMajor = 8;
inline constexpr int kFp8MinMinor = 9;

// Asks the CUDA runtime about `device_index`; a machine without a usable GPU
// gives is_cuda = false with the runtime's reason in `name`.
Fp8DeviceInfo QueryCudaDevice(int device_index);

// CPU: not a CUDA device at all.
Fp8DeviceInfo CpuDevice();

// OK when `info` supports FP8; otherwise FailedPrecondition naming the device,
// its compute capability and the requirement.
absl::Status CheckFp8Supported(const Fp8DeviceInfo& info);

// The decision for a job that asked for FP8: true = train in FP8; false = the
// device cannot and the job allows fallback (logged at warn level, with the
// reason); an error when it cannot and fallback is not allowed.
absl::StatusOr<bool> ResolveFp8(const Fp8DeviceInfo& info, bool allow_fallback);

}  // namespace kp::fp8

#endif  // KP_RUNTIME_FP8_DEVICE_CHECK_H_
