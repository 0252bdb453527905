#include "runtime/parallel/all_to_all.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "absl/strings/str_cat.h"
#include "runtime/parallel/cp_modes.h"

namespace kp::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct CommHolder : public torch::CustomClassHolder {
  comm::Communicator* comm = nullptr;
};

struct AllToAllFunction : public torch::autograd::Function<AllToAllFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x,
                               c10::intrusive_ptr<CommHolder> holder, int64_t scatter_dim,
                               int64_t gather_dim) {
    auto r = AllToAll(*holder->comm, x, scatter_dim, gather_dim);
    internal::ThrowIfFailed(r.status(), "all-to-all forward");
    ctx->saved_data["comm"] = c10::IValue::make_capsule(holder);
    ctx->saved_data["scatter_dim"] = scatter_dim;
    ctx->saved_data["gather_dim"] = gather_dim;
    return {*r};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto holder =
        c10::static_intrusive_pointer_cast<CommHolder>(ctx->saved_data["comm"].toCapsule());
    const int64_t scatter_dim = ctx->saved_data["scatter_dim"].toInt();
    const int64_t gather_dim = ctx->saved_data["gather_dim"].toInt();
    auto r = AllToAll(*holder->comm, grads[0].contiguous(), gather_dim, scatter_dim);
    internal::ThrowIfFailed(r.status(), "all-to-all backward");
    return {*r, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

absl::StatusOr<at::Tensor> AllToAll(comm::Communicator& comm, const at::Tensor& x,
                                    int64_t scatter_dim, int64_t gather_dim) {
  const int n = comm.size(), r = comm.rank();
  if (scatter_dim < 0) scatter_dim += x.dim();
  if (gather_dim < 0) gather_dim += x.dim();
  if (x.size(scatter_dim) % n != 0) {
    return absl::InvalidArgumentError(absl::StrCat("all-to-all: size ", x.size(scatter_dim),
                                                   " of dim ", scatter_dim,
                                                   " is not divisible by the group size ", n));
  }
  std::vector<at::Tensor> chunks = x.chunk(n, scatter_dim);
  std::vector<at::Tensor> received(n);
  received[r] = chunks[r];
  for (int d = 1; d < n; ++d) {
    const int dst = (r + d) % n, src = (r - d + n) % n;
    at::Tensor send = chunks[dst].contiguous();
    received[src] = at::empty_like(send);
    std::unique_ptr<comm::Work> work = comm.SendRecvAsync(send, dst, received[src], src);
    if (absl::Status st = work->Wait(); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("all-to-all step ", d, ": rank ", r,
                                                  " sending to ", dst, ", receiving from ", src,
                                                  ": ", st.message()));
    }
  }
  return at::cat(received, gather_dim);
}

at::Tensor AllToAllAutograd(comm::Communicator* comm, const at::Tensor& x, int64_t scatter_dim,
                            int64_t gather_dim) {
  auto holder = c10::make_intrusive<CommHolder>();
  holder->comm = comm;
  return AllToAllFunction::apply(x, holder, scatter_dim, gather_dim)[0];
}

}  // namespace kp::parallel
