#include "runtime/comm/reduce_values.h"

#include <ATen/ATen.h>

#include "absl/status/status.h"

namespace kp::comm {
namespace {

template <typename T>
absl::Status ReduceInPlace(Communicator& comm, std::vector<T>& values, ReduceOp op, c10::Device device,
                           at::ScalarType dtype) {
  if (values.empty()) return absl::OkStatus();
  at::Tensor t = at::tensor(values, dtype).to(device);
  KP_RETURN_IF_ERROR(comm.AllReduce(t, op));
  t = t.cpu();
  for (size_t i = 0; i < values.size(); ++i) values[i] = t[i].item<T>();
  return absl::OkStatus();
}

absl::StatusOr<bool> AgreeOnFlag(Communicator* comm, bool mine, ReduceOp op, c10::Device device) {
  if (comm == nullptr || comm->size() == 1) return mine;
  std::vector<int64_t> flag = {mine ? 1 : 0};
  KP_RETURN_IF_ERROR(AllReduceValues(*comm, flag, op, device));
  return flag[0] != 0;
}

}  // namespace

absl::Status AllReduceValues(Communicator& comm, std::vector<double>& values, ReduceOp op,
                             c10::Device device) {
  return ReduceInPlace(comm, values, op, device, at::kDouble);
}

absl::Status AllReduceValues(Communicator& comm, std::vector<int64_t>& values, ReduceOp op,
                             c10::Device device) {
  return ReduceInPlace(comm, values, op, device, at::kLong);
}

absl::StatusOr<ValueRange> AllReduceRange(Communicator& comm, int64_t value, c10::Device device) {
  if (value == INT64_MIN) return absl::InvalidArgumentError("AllReduceRange: INT64_MIN has no negation");
  std::vector<int64_t> v = {value, -value};
  KP_RETURN_IF_ERROR(AllReduceValues(comm, v, ReduceOp::kMax, device));
  return ValueRange{-v[1], v[0]};
}

absl::StatusOr<bool> AllRanks(Communicator* comm, bool mine, c10::Device device) {
  return AgreeOnFlag(comm, mine, ReduceOp::kMin, device);
}

absl::StatusOr<bool> AnyRank(Communicator* comm, bool mine, c10::Device device) {
  return AgreeOnFlag(comm, mine, ReduceOp::kMax, device);
}

}  // namespace kp::comm
