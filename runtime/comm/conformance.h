// Backend conformance checks, run by every backend's tests on every rank.
// Each rank generates every rank's inputs from a shared seed, so it can
// compute the expected result of each collective locally (in float64 for
// floating types) and compare without trusting the backend.
#ifndef KP_RUNTIME_COMM_CONFORMANCE_H_
#define KP_RUNTIME_COMM_CONFORMANCE_H_

#include <cstdint>

#include <c10/core/Device.h>

#include "runtime/comm/communicator.h"
#include "runtime/common/status.h"

namespace kp::comm::testing {

// AllReduce (sum/avg/max/min over float32, float64, bfloat16, int64; sync and
// several async in flight), AllGather (+async), ReduceScatter, Broadcast,
// a SendRecv ring, Barrier and Split (with an AllReduce inside each part; a
// negative color on rank 0 must give it no communicator).
// Returns the first mismatch, naming the call, rank and dtype.
// Tensors live on `device` (CPU for gloo and fake, the rank's GPU for nccl).
absl::Status RunConformance(Communicator& comm, uint64_t seed,
                            c10::Device device = c10::Device(c10::kCPU));

}  // namespace kp::comm::testing

#endif  // KP_RUNTIME_COMM_CONFORMANCE_H_
