// All-to-all built from SendRecvAsync pairs (the Communicator has no
// AllToAll; see the report: adding one lets NCCL run it as one grouped call).
#ifndef KP_RUNTIME_PARALLEL_ALL_TO_ALL_H_
#define KP_RUNTIME_PARALLEL_ALL_TO_ALL_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "runtime/comm/communicator.h"

namespace kp::parallel {

// Cuts x into size() equal chunks along scatter_dim, sends chunk j to rank j
// and concatenates the chunks received from ranks 0..size()-1 along
// gather_dim. x.size(scatter_dim) must divide by size(). Exchanges run as
// size()-1 steps; at step d rank r sends to r+d and receives from r-d.
absl::StatusOr<at::Tensor> AllToAll(comm::Communicator& comm, const at::Tensor& x,
                                    int64_t scatter_dim, int64_t gather_dim);

// Differentiable AllToAll: its backward is the inverse all-to-all. Failures
// throw (internal::CommFailure, from forward; c10 errors in backward).
at::Tensor AllToAllAutograd(comm::Communicator* comm, const at::Tensor& x, int64_t scatter_dim,
                            int64_t gather_dim);

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_ALL_TO_ALL_H_
