// A few host numbers reduced across the ranks of a communicator: the small
// agreements a worker needs (a timing, the step's loss) without each caller
// building its own tensor round trip.
#ifndef KP_RUNTIME_COMM_REDUCE_VALUES_H_
#define KP_RUNTIME_COMM_REDUCE_VALUES_H_

#include <vector>

#include <c10/core/Device.h>

#include "runtime/comm/communicator.h"

namespace kp::comm {

// In place: each value becomes its `op` over all ranks. The values travel as
// one float64 tensor on `device` (NCCL needs the rank's GPU; CPU for Gloo).
absl::Status AllReduceValues(Communicator& comm, std::vector<double>& values, ReduceOp op,
                             c10::Device device);

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_REDUCE_VALUES_H_
