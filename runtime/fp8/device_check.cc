#include "runtime/fp8/device_check.h"

#include <cuda_runtime_api.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"

namespace kp::fp8 {

Fp8DeviceInfo QueryCudaDevice(int device_index) {
  Fp8DeviceInfo info;
  info.device_index = device_index;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later CUDA calls see a clean state
    info.name = absl::StrCat("no usable CUDA device (", cudaGetErrorString(err), ")");
    return info;
  }
  if (device_index < 0 || device_index >= count) {
    info.name = absl::StrCat("no CUDA device ", device_index, " (this machine has ", count, ")");
    return info;
  }
  cudaDeviceProp prop;
  err = cudaGetDeviceProperties(&prop, device_index);
  if (err != cudaSuccess) {
    info.name = absl::StrCat("CUDA device ", device_index, ": ", cudaGetErrorString(err));
    return info;
  }
  info.is_cuda = true;
  info.major = prop.major;
  info.minor = prop.minor;
  info.name = prop.name;
  return info;
}

Fp8DeviceInfo CpuDevice() {
  Fp8DeviceInfo info;
  info.name = "CPU";
  return info;
}

absl::Status CheckFp8Supported(const Fp8DeviceInfo& info) {
  if (!info.is_cuda) {
    return absl::FailedPreconditionError(absl::StrCat(
        "FP8 training needs a CUDA GPU with compute capability >= ", kFp8MinMajor, ".",
        kFp8MinMinor, " (Ada, Hopper or newer); this job runs on ", info.name,
        ". Use precision bf16/fp32, or allow fallback to BF16 (fp8.allow_fallback: true)"));
  }
  const bool ok = info.major > kFp8MinMajor || (info.major == kFp8MinMajor && info.minor >= kFp8MinMinor);
  if (!ok) {
    return absl::FailedPreconditionError(absl::StrCat(
        "FP8 training needs compute capability >= ", kFp8MinMajor, ".", kFp8MinMinor,
        "; CUDA device ", info.device_index, " (", info.name, ") has ", info.major, ".", info.minor,
        ". Use precision bf16, or allow fallback to BF16 (fp8.allow_fallback: true)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> ResolveFp8(const Fp8DeviceInfo& info, bool allow_fallback) {
  absl::Status st = CheckFp8Supported(info);
  if (st.ok()) return true;
  if (!allow_fallback) return st;
  spdlog::warn("FP8 FALLBACK: this job asked for FP8 and allows fallback, so it trains in BF16. Reason: {}",
               std::string(st.message()));
  return false;
}

}  // namespace kp::fp8
