#include "runtime/engine/offload.h"

#include <mutex>
#include <optional>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "runtime/common/status.h"

namespace kp::engine {
namespace {

int64_t Bytes(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

// CPU: the host copy is an ordinary copy; the schedule and the bookkeeping
// are those of the CUDA offloader.
class CpuOffloader final : public ActivationOffloader {
 public:
  int64_t Stash(const at::Tensor& x) override {
    std::lock_guard<std::mutex> lock(mu_);
    Slot s;
    s.host = x.detach().clone(at::MemoryFormat::Contiguous);
    AddHost(Bytes(s.host));
    slots_.push_back(std::move(s));
    ++stats_.stashed;
    return static_cast<int64_t>(slots_.size()) - 1;
  }

  void Prefetch(int64_t slot) override {
    std::lock_guard<std::mutex> lock(mu_);
    Slot& s = At(slot);
    if (s.fetched || s.prefetched) return;
    s.prefetched = true;
    ++stats_.prefetched;
  }

  at::Tensor Fetch(int64_t slot) override {
    std::lock_guard<std::mutex> lock(mu_);
    Slot& s = At(slot);
    KP_CHECK(!s.fetched);  // each checkpoint is read back once
    if (!s.prefetched) ++stats_.fetched_late;
    s.fetched = true;
    stats_.host_bytes -= Bytes(s.host);
    return std::move(s.host);
  }

  Stats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  struct Slot {
    at::Tensor host;
    bool prefetched = false;
    bool fetched = false;
  };
  Slot& At(int64_t slot) {
    KP_CHECK(slot >= 0 && slot < static_cast<int64_t>(slots_.size()));
    return slots_[static_cast<size_t>(slot)];
  }
  void AddHost(int64_t b) {
    stats_.host_bytes += b;
    stats_.peak_host_bytes = std::max(stats_.peak_host_bytes, stats_.host_bytes);
  }

  mutable std::mutex mu_;
  std::vector<Slot> slots_;
  Stats stats_;
};

// CUDA: device -> pinned host and back on one side stream per offloader.
class CudaOffloader final : public ActivationOffloader {
 public:
  explicit CudaOffloader(const at::Device& device)
      : device_(device), side_(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index())) {}

  int64_t Stash(const at::Tensor& x_in) override {
    std::lock_guard<std::mutex> lock(mu_);
    KP_CHECK(x_in.device() == device_);
    c10::cuda::CUDAGuard guard(device_);
    const at::Tensor x = x_in.detach().contiguous();
    const c10::cuda::CUDAStream compute = c10::cuda::getCurrentCUDAStream(device_.index());
    Slot s;
    s.host = at::empty(x.sizes(), x.options().device(at::kCPU).pinned_memory(true));
    // The side stream copies once the compute stream has produced x.
    at::cuda::CUDAEvent produced;
    produced.record(compute);
    produced.block(side_);
    {
      c10::cuda::CUDAStreamGuard on_side(side_);
      s.host.copy_(x, /*non_blocking=*/true);
    }
    // x's memory goes back to the allocator when the caller drops it, but is
    // handed out again only after the side stream's copy has read it.
    c10::cuda::CUDACachingAllocator::recordStream(x.storage().data_ptr(), side_);
    AddHost(Bytes(s.host));
    slots_.push_back(std::move(s));
    ++stats_.stashed;
    return static_cast<int64_t>(slots_.size()) - 1;
  }

  void Prefetch(int64_t slot) override {
    std::lock_guard<std::mutex> lock(mu_);
    Slot& s = At(slot);
    if (s.fetched || s.device.defined()) return;
    StartCopyBack(s);
    ++stats_.prefetched;
  }

  at::Tensor Fetch(int64_t slot) override {
    std::lock_guard<std::mutex> lock(mu_);
    Slot& s = At(slot);
    KP_CHECK(!s.fetched);
    if (!s.device.defined()) {
      StartCopyBack(s);
      ++stats_.fetched_late;
    }
    c10::cuda::CUDAGuard guard(device_);
    s.ready->block(c10::cuda::getCurrentCUDAStream(device_.index()));
    s.fetched = true;
    // The pinned block returns to PyTorch's host allocator, which reuses it
    // only after the copies recorded on it have finished.
    stats_.host_bytes -= Bytes(s.host);
    s.host.reset();
    s.ready.reset();
    return std::move(s.device);
  }

  Stats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  struct Slot {
    at::Tensor host;
    at::Tensor device;
    std::optional<at::cuda::CUDAEvent> ready;
    bool fetched = false;
  };

  Slot& At(int64_t slot) {
    KP_CHECK(slot >= 0 && slot < static_cast<int64_t>(slots_.size()));
    return slots_[static_cast<size_t>(slot)];
  }

  void AddHost(int64_t b) {
    stats_.host_bytes += b;
    stats_.peak_host_bytes = std::max(stats_.peak_host_bytes, stats_.host_bytes);
  }

  void StartCopyBack(Slot& s) {
    c10::cuda::CUDAGuard guard(device_);
    const c10::cuda::CUDAStream compute = c10::cuda::getCurrentCUDAStream(device_.index());
    // Allocated on the compute stream (its pool), so the memory may have been
    // freed by compute work still queued: the side stream writes only after it.
    s.device = at::empty(s.host.sizes(), s.host.options().device(device_).pinned_memory(false));
    at::cuda::CUDAEvent allocated;
    allocated.record(compute);
    allocated.block(side_);
    {
      c10::cuda::CUDAStreamGuard on_side(side_);
      s.device.copy_(s.host, /*non_blocking=*/true);  // after the stash's copy: same stream
    }
    c10::cuda::CUDACachingAllocator::recordStream(s.device.storage().data_ptr(), side_);
    s.ready.emplace();
    s.ready->record(side_);
  }

  mutable std::mutex mu_;
  at::Device device_;
  c10::cuda::CUDAStream side_;
  std::vector<Slot> slots_;
  Stats stats_;
};

}  // namespace

std::shared_ptr<ActivationOffloader> MakeActivationOffloader(const at::Device& device) {
  if (device.is_cuda()) return std::make_shared<CudaOffloader>(device);
  return std::make_shared<CpuOffloader>();
}

}  // namespace kp::engine
