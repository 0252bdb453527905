#include "runtime/fp8/amax_sync.h"

#include <vector>

#include <ATen/ATen.h>

namespace kp::fp8 {

absl::Status AllReduceAmax(Fp8Session& session, comm::Communicator& comm) {
  const auto layers = session.fp8_layers();
  if (layers.empty() || comm.size() == 1) return absl::OkStatus();
  // The whole window, not only this step's column: with grad_accum > 1 the
  // history rolls once per micro-batch, so this step's earlier micro-batches
  // sit in columns 1.. and differ between ranks too. Columns already reduced
  // are equal everywhere and stay as they are. A few KB for all layers.
  std::vector<at::Tensor> histories;
  histories.reserve(layers.size());
  for (const auto& l : layers) histories.push_back(l->state().amax_history);
  at::Tensor packed = at::stack(histories);  // [layers, 3, L]
  KP_RETURN_IF_ERROR(comm.AllReduce(packed, comm::ReduceOp::kMax));
  for (size_t i = 0; i < layers.size(); ++i) histories[i].copy_(packed[i]);
  return absl::OkStatus();
}

}  // namespace kp::fp8
