// The context-parallel parity self-check a job runs before it trains: one
// attention layer, context-parallel and on a single rank, over the same small
// random input (seeded identically on every rank), forward and backward. Any
// difference beyond tolerance refuses the job with an error naming the
// tensor, the max abs / rel error and the rank; all ranks return the same
// verdict.
#ifndef KP_RUNTIME_PARALLEL_PARITY_CHECK_H_
#define KP_RUNTIME_PARALLEL_PARITY_CHECK_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "runtime/comm/communicator.h"
#include "runtime/parallel/cp_options.h"

namespace kp::parallel {

struct ParityConfig {
  CpOptions options;  // the CP configuration the job will train with
  int64_t batch = 1;
  int64_t heads = 4;
  int64_t kv_heads = 2;
  int64_t seq_len = 0;  // 0: 16 * cp (must be a multiple of 2 * cp)
  int64_t head_dim = 16;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
  uint64_t seed = 20261124;
  // Max error relative to the largest reference magnitude of each tensor.
  // 0: 1e-4 (float32), 1e-9 (float64), 3e-2 (bf16/fp16).
  double tolerance = 0.0;
};

// Collective over comm (every rank of the CP group calls it).
absl::Status CheckCpParity(comm::Communicator& comm, const ParityConfig& config);

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_PARITY_CHECK_H_
