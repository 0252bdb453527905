// Simulated context parallelism on one device: every rank's zigzag ring
// schedule (all its attention calls, LSE merges and dK/dV accumulations,
// forward then backward) run in turn, without communication. It is the
// compute a CP group does, so its time against one full attention call at the
// same total length is the network-independent part of CP efficiency; and it
// runs CP numerics on one GPU.
#ifndef KP_RUNTIME_PARALLEL_CP_SIMULATION_H_
#define KP_RUNTIME_PARALLEL_CP_SIMULATION_H_

#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/parallel/local_attention.h"

namespace kp::parallel {

struct SimulatedRanks {
  // Per rank: local output and gradients (zigzag shards).
  std::vector<at::Tensor> out, dq, dk, dv;
};

// q[r], k[r], v[r], dout[r]: rank r's zigzag shards, r = 0..cp-1.
SimulatedRanks SimulateRingAttention(const std::vector<at::Tensor>& q,
                                     const std::vector<at::Tensor>& k,
                                     const std::vector<at::Tensor>& v,
                                     const std::vector<at::Tensor>& dout,
                                     const LocalAttentionOptions& options);

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_CP_SIMULATION_H_
