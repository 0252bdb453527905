#include "runtime/comm/reduce_values.h"

#include <ATen/ATen.h>

namespace kp::comm {

absl::Status AllReduceValues(Communicator& comm, std::vector<double>& values, ReduceOp op,
                             c10::Device device) {
  if (values.empty()) return absl::OkStatus();
  at::Tensor t = at::tensor(values, at::kDouble).to(device);
  KP_RETURN_IF_ERROR(comm.AllReduce(t, op));
  t = t.cpu();
  for (size_t i = 0; i < values.size(); ++i) values[i] = t[i].item<double>();
  return absl::OkStatus();
}

}  // namespace kp::comm
