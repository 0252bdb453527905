// Activation checkpoints kept in host memory between forward and backward.
// With full activation checkpointing each block keeps only its input; at
// long sequence lengths those inputs alone are n_layers x T x d_model (16 GiB
// at 1M tokens, d 2048, 4 layers, bf16). The offloader copies each one to
// pinned host memory on a side stream as soon as the forward has produced it
// (the device copy is released once the copy is done) and copies it back
// ahead of use in backward, so the device holds at most two of them.
//
// Ordering on CUDA uses events only: the side stream waits for the compute
// stream where the data is produced or the destination allocated, and the
// compute stream waits for the side stream before it reads a fetched tensor.
// The host never waits. On CPU the "host copy" is a plain copy, so the same
// schedule (stash, prefetch, fetch) runs in CPU tests.
#ifndef KP_RUNTIME_ENGINE_OFFLOAD_H_
#define KP_RUNTIME_ENGINE_OFFLOAD_H_

#include <cstdint>
#include <memory>

#include <ATen/core/Tensor.h>

namespace kp::engine {

class ActivationOffloader {
 public:
  struct Stats {
    int64_t stashed = 0;       // tensors copied out
    int64_t prefetched = 0;    // copies back started ahead of Fetch
    int64_t fetched_late = 0;  // Fetch with no prefetch before it (copy on demand)
    int64_t host_bytes = 0;    // host bytes held now
    int64_t peak_host_bytes = 0;
  };

  virtual ~ActivationOffloader() = default;
  // Starts copying x out; returns its slot. The caller may drop x right away
  // (on CUDA its memory is handed out again only after the copy).
  virtual int64_t Stash(const at::Tensor& x) = 0;
  // Starts copying a slot back (no-op when already started or fetched).
  virtual void Prefetch(int64_t slot) = 0;
  // The slot's tensor on its original device, ready for use on the current
  // stream. Releases the host copy; each slot is fetched once.
  virtual at::Tensor Fetch(int64_t slot) = 0;
  virtual Stats stats() const = 0;
};

// One offloader per forward pass (it lives as long as the autograd graph
// that holds it). `device` is where the stashed tensors live.
std::shared_ptr<ActivationOffloader> MakeActivationOffloader(const at::Device& device);

}  // namespace kp::engine

#endif  // KP_RUNTIME_ENGINE_OFFLOAD_H_
