// The mode implementations behind ContextParallelAttention (internal). Each is
// a torch::autograd::Function; inputs are validated by the caller.
#ifndef KP_RUNTIME_PARALLEL_CP_MODES_H_
#define KP_RUNTIME_PARALLEL_CP_MODES_H_

#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>

#include "absl/status/status.h"
#include "runtime/comm/communicator.h"
#include "runtime/parallel/cp_options.h"

namespace kp::parallel::internal {

// What a mode's backward needs besides tensors; rides in the autograd
// context as a capsule.
struct CpState : public torch::CustomClassHolder {
  comm::Communicator* comm = nullptr;
  CpOptions options;
  double scale = 0.0;
};

// A failed transfer inside an autograd function; ContextParallelAttention
// turns it back into the Status.
class CommFailure : public std::runtime_error {
 public:
  explicit CommFailure(absl::Status status)
      : std::runtime_error(status.ToString()), status_(std::move(status)) {}
  const absl::Status& status() const { return status_; }

 private:
  absl::Status status_;
};

// Throws CommFailure with `what` prepended when status is not OK.
void ThrowIfFailed(const absl::Status& status, const std::string& what);

// The modes' forward and backward as plain functions (the autograd wrappers
// below call them). Driving them directly serves several ranks in one process
// on one GPU: autograd runs every CUDA backward on one device thread, which
// would serialize ranks that must exchange data.
struct RingSaved {
  at::Tensor out, lse;
  at::Tensor kv;  // this rank's K and V stacked [2, B, Hkv, T, D]: what travels
};
RingSaved RingForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const CpState& state);
std::tuple<at::Tensor, at::Tensor, at::Tensor> RingBackward(const at::Tensor& dout,
                                                            const at::Tensor& q,
                                                            const RingSaved& saved,
                                                            const CpState& state);

struct AllGatherSaved {
  at::Tensor out, lse, k_full, v_full;
};
AllGatherSaved AllGatherForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const CpState& state);
std::tuple<at::Tensor, at::Tensor, at::Tensor> AllGatherBackward(
    const at::Tensor& dout, const at::Tensor& q, const AllGatherSaved& saved,
    at::ScalarType kv_dtype, const CpState& state);

// Ulysses forward and backward in one call (no autograd), for the same use.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> UlyssesForwardBackward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dout,
    const CpState& state);

at::Tensor RingAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         c10::intrusive_ptr<CpState> state);
at::Tensor AllGatherAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              c10::intrusive_ptr<CpState> state);
at::Tensor UlyssesAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            c10::intrusive_ptr<CpState> state);

}  // namespace kp::parallel::internal

#endif  // KP_RUNTIME_PARALLEL_CP_MODES_H_
