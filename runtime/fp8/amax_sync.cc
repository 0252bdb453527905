#include "runtime/fp8/amax_sync.h"

#include <vector>

#include <ATen/ATen.h>

namespace kp::fp8 {

absl::Status AllReduceAmax(Fp8Session& session, comm::Communicator& comm) {
  const auto layers = session.fp8_layers();
  if (layers.empty() || comm.size() == 1) return absl::OkStatus();
  std::vector<at::Tensor> cols;
  cols.reserve(layers.size());
  for (const auto& l : layers) cols.push_back(l->state().amax_history.select(1, 0));
  at::Tensor packed = at::stack(cols);  // [layers, 3]
  KP_RETURN_IF_ERROR(comm.AllReduce(packed, comm::ReduceOp::kMax));
  for (size_t i = 0; i < layers.size(); ++i) cols[i].copy_(packed[i]);
  return absl::OkStatus();
}

}  // namespace kp::fp8
