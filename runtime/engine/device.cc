#include "runtime/engine/device.h"

#include <sys/resource.h>

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"

namespace kp::engine {

bool CudaAvailable() { return c10::cuda::device_count() > 0; }

absl::StatusOr<c10::Device> ResolveDevice(const std::string& name, int local_rank) {
  if (name == "cpu") return c10::Device(c10::kCPU);
  if (name == "cuda" || name == "auto") {
    const int n = c10::cuda::device_count();
    if (n == 0) {
      if (name == "auto") return c10::Device(c10::kCPU);
      return absl::FailedPreconditionError("--device cuda: no CUDA device is visible");
    }
    if (local_rank < 0 || local_rank >= n) {
      return absl::InvalidArgumentError(absl::StrCat("local_rank ", local_rank, " but only ", n,
                                                     " CUDA devices are visible"));
    }
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(local_rank));
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device must be cpu, cuda or auto, got '", name, "'"));
}

int64_t PeakMemoryBytes(const c10::Device& device) {
  if (device.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return stats.allocated_bytes[0].peak;  // [0]: all pool types together
  }
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

void ResetPeakMemory(const c10::Device& device) {
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
}

void Synchronize(const c10::Device& device) {
  if (device.is_cuda()) c10::cuda::device_synchronize();
}

double PeakFlops(const c10::Device& device, bool bf16) {
  if (!device.is_cuda()) return 0.0;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device.index()) != cudaSuccess) return 0.0;
  const std::string name = prop.name;
  // Dense (no sparsity) tensor-core peaks from NVIDIA's datasheets; fp32
  // training here means TF32-free fp32 math, so its peak is the CUDA-core one.
  if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos) {
    return bf16 ? 989.4e12 : 66.9e12;
  }
  if (name.find("A100") != std::string::npos) return bf16 ? 312e12 : 19.5e12;
  return 0.0;
}

}  // namespace kp::engine
