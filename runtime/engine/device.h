// The few device-specific calls the loop needs (CUDA through libtorch's
// hooks; the CPU fallbacks keep every path runnable on a CPU-only machine).
#ifndef KP_RUNTIME_ENGINE_DEVICE_H_
#define KP_RUNTIME_ENGINE_DEVICE_H_

#include <cstdint>
#include <string>

#include <c10/core/Device.h>

#include "runtime/common/status.h"

namespace kp::engine {

// "cpu", "cuda" (device local_rank), or "auto" (cuda when available).
// FAILED_PRECONDITION when cuda is asked for and there is none.
absl::StatusOr<c10::Device> ResolveDevice(const std::string& name, int local_rank);

bool CudaAvailable();

// Peak bytes allocated by tensors on a CUDA device since the last reset; on
// CPU the process's peak resident set size.
int64_t PeakMemoryBytes(const c10::Device& device);
void ResetPeakMemory(const c10::Device& device);

// Waits for the device's queued work (no-op on CPU): timings need it.
void Synchronize(const c10::Device& device);

// Dense bf16 peak FLOP/s of the device for MFU (H100/H200 SXM: 989 TFLOP/s),
// 0 when unknown (CPU).
double PeakFlops(const c10::Device& device, bool bf16);

}  // namespace kp::engine

#endif  // KP_RUNTIME_ENGINE_DEVICE_H_
