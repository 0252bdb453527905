#include "runtime/engine/checkpoint/rng_state.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstring>
#include <mutex>

namespace kp::ckpt {

std::string CaptureCpuRngState() {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  at::Tensor state;
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    state = gen.get_state();
  }
  return std::string(static_cast<const char*>(state.data_ptr()), state.numel());
}

absl::Status RestoreCpuRngState(const std::string& bytes) {
  at::Tensor state = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
  std::memcpy(state.data_ptr(), bytes.data(), bytes.size());
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  try {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(std::string("CPU RNG state rejected: ") + e.what_without_backtrace());
  }
  return absl::OkStatus();
}

}  // namespace kp::ckpt
