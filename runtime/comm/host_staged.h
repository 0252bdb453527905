// A communicator for device tensors over a backend that takes host tensors:
// every call copies its device tensors to host memory, runs the inner
// (host) communicator, and copies results back.
//
// Why: several ranks sharing one GPU must be separate processes (libtorch's
// autograd runs all CUDA backward work of a process on one thread per
// device, so in-process ranks that exchange data inside their backward wait
// on each other forever), and NCCL refuses two ranks on one device. Gloo over
// host copies lets a multi-rank job (data or context parallel) run on one GPU
// to check its logic and numbers: `kp-train --comm_backend gloo` on CUDA.
// It is slow (every byte crosses PCIe twice, async calls complete
// synchronously): a test and debugging path, not a data plane.
#ifndef KP_RUNTIME_COMM_HOST_STAGED_H_
#define KP_RUNTIME_COMM_HOST_STAGED_H_

#include <memory>

#include <ATen/core/Tensor.h>

#include "runtime/comm/communicator.h"

namespace kp::comm {

// staging: where the inner communicator's tensors live (CPU for Gloo).
// Tensors already there pass through without copies.
std::unique_ptr<Communicator> MakeHostStaged(std::unique_ptr<Communicator> inner,
                                             c10::Device staging = c10::Device(c10::kCPU));

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_HOST_STAGED_H_
