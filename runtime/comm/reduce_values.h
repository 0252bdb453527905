// A few host numbers reduced across the ranks of a communicator: the small
// agreements a worker needs (a timing, the step's loss, "does every rank
// resume from the same step", "is any rank stopping") without each caller
// building its own tensor round trip.
#ifndef KP_RUNTIME_COMM_REDUCE_VALUES_H_
#define KP_RUNTIME_COMM_REDUCE_VALUES_H_

#include <cstdint>
#include <vector>

#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "runtime/comm/communicator.h"

namespace kp::comm {

// In place: each value becomes its `op` over all ranks. The values travel as
// one tensor on `device` (NCCL needs the rank's GPU; CPU for Gloo): float64
// for doubles, int64 for integers (exact: step numbers, checksums).
absl::Status AllReduceValues(Communicator& comm, std::vector<double>& values, ReduceOp op,
                             c10::Device device);
absl::Status AllReduceValues(Communicator& comm, std::vector<int64_t>& values, ReduceOp op,
                             c10::Device device);

// The smallest and largest of one integer over all ranks (one all-reduce of
// {v, -v} with max): equal means every rank holds the same value.
struct ValueRange {
  int64_t lowest = 0;
  int64_t highest = 0;
  bool AllEqual() const { return lowest == highest; }
};
// `value` must not be INT64_MIN (its negation would overflow).
absl::StatusOr<ValueRange> AllReduceRange(Communicator& comm, int64_t value, c10::Device device);

// True on every rank iff `mine` is true on every rank (AllRanks) / on at
// least one (AnyRank). A null communicator or a world of one answers `mine`.
absl::StatusOr<bool> AllRanks(Communicator* comm, bool mine, c10::Device device);
absl::StatusOr<bool> AnyRank(Communicator* comm, bool mine, c10::Device device);

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_REDUCE_VALUES_H_
