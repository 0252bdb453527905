// Ring pass-KV attention over zigzag shards.
//
// Forward, rank r of N, step t = 0..N-1: holds the K/V of rank s = r - t and
// sends it on to r+1 while attending its queries to it (the transfer of step
// t+1 overlaps the attention of step t). Backward: the K/V pass around again;
// the dK/dV accumulator of each block travels with it, each rank adding its
// share, and one last hop brings it home to its owner.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "absl/strings/str_cat.h"
#include "runtime/parallel/cp_modes.h"
#include "runtime/parallel/local_attention.h"
#include "runtime/parallel/zigzag.h"

namespace kp::parallel::internal {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::vector<BlockTask> StepTasks(int rank, int src, int n, int64_t chunk, bool causal) {
  return PlanBlocks(ZigzagSegments(rank, n, chunk), ZigzagSegments(src, n, chunk), causal);
}

struct RingFunction : public torch::autograd::Function<RingFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v, c10::intrusive_ptr<CpState> state) {
    auto [out, lse] = RingForward(q, k, v, *state);
    ctx->save_for_backward({q, k, v, out, lse});
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    return {out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    auto state = c10::static_intrusive_pointer_cast<CpState>(
        ctx->saved_data["state"].toCapsule());
    // Dense once here, so each block's dO slice shares O's strides and the
    // attention backward takes it without a copy per block.
    const at::Tensor dout =
        grads[0].defined() ? grads[0].contiguous() : at::zeros_like(saved[3]);
    auto [dq, dk, dv] = RingBackward(dout, saved[0], saved[1], saved[2], saved[3], saved[4], *state);
    return {dq, dk, dv, at::Tensor()};
  }
};

}  // namespace

std::pair<at::Tensor, at::Tensor> RingForward(const at::Tensor& q, const at::Tensor& k,
                                              const at::Tensor& v, const CpState& state_ref) {
  const CpState* state = &state_ref;
  comm::Communicator* comm = state->comm;
  const int n = comm->size(), r = comm->rank();
  const int next = (r + 1) % n, prev = (r - 1 + n) % n;
  const int64_t chunk = q.size(2) / 2;
  MergeAccumulator acc = MakeAccumulator(q);
  at::Tensor cur = at::stack({k, v}).contiguous();  // one transfer per step
  for (int t = 0; t < n; ++t) {
    const int src = (r - t + n) % n;
    at::Tensor incoming;
    std::unique_ptr<comm::Work> work;
    if (t + 1 < n) {
      incoming = at::empty_like(cur);
      work = comm->SendRecvAsync(cur, next, incoming, prev);
    }
    RunForwardTasks(q, cur[0], cur[1], StepTasks(r, src, n, chunk, state->options.causal),
                    state->scale, state->options.backend, state->options.merge, acc);
    if (work) {
      ThrowIfFailed(work->Wait(), absl::StrCat("ring attention forward, step ", t, ": rank ", r,
                                               " receiving K/V from rank ", prev));
      cur = incoming;
    }
  }
  return {acc.out.to(q.scalar_type()), acc.lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> RingBackward(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const CpState& state_ref) {
  const CpState* state = &state_ref;
  comm::Communicator* comm = state->comm;
  const int n = comm->size(), r = comm->rank();
  const int next = (r + 1) % n, prev = (r - 1 + n) % n;
  const int64_t chunk = q.size(2) / 2;
  const at::ScalarType acc_dt = AccumulationDtype(q);

  at::Tensor dq = at::zeros(q.sizes(), q.options().dtype(acc_dt));
  at::Tensor cur = at::stack({k, v}).contiguous();
  at::Tensor dkv_sending, dkv_arriving;  // kept alive until their transfer completes
  std::unique_ptr<comm::Work> dkv_work;
  for (int t = 0; t < n; ++t) {
    const int src = (r - t + n) % n;
    at::Tensor incoming;
    std::unique_ptr<comm::Work> kv_work;
    if (t + 1 < n) {
      incoming = at::empty_like(cur);
      kv_work = comm->SendRecvAsync(cur, next, incoming, prev);
    }
    // This rank's share of block src's gradients goes straight into the
    // accumulator for block src arriving from the previous rank (a fresh one
    // at t = 0): no per-step buffer and no pass to add the two.
    at::Tensor dkv;
    auto target = [&]() -> std::pair<at::Tensor, at::Tensor> {
      if (dkv_work) {
        ThrowIfFailed(dkv_work->Wait(), absl::StrCat("ring attention backward, step ", t,
                                                     ": rank ", r, " receiving dK/dV from rank ",
                                                     prev));
        dkv_work.reset();
        dkv = dkv_arriving;
      } else {
        dkv = at::zeros(cur.sizes(), cur.options().dtype(acc_dt));
      }
      return {dkv[0], dkv[1]};
    };
    RunBackwardTasks(dout, q, cur[0], cur[1], out, lse,
                     StepTasks(r, src, n, chunk, state->options.causal), state->scale,
                     state->options.backend, dq, target);
    if (!dkv.defined()) target();  // no visible block this step: pass it on as it came
    if (n > 1) {
      dkv_sending = dkv;
      dkv_arriving = at::empty_like(dkv);
      dkv_work = comm->SendRecvAsync(dkv_sending, next, dkv_arriving, prev);
    } else {
      dkv_arriving = dkv;
    }
    if (kv_work) {
      ThrowIfFailed(kv_work->Wait(), absl::StrCat("ring attention backward, step ", t,
                                                  ": rank ", r, " receiving K/V from rank ",
                                                  prev));
      cur = incoming;
    }
  }
  if (dkv_work) {
    ThrowIfFailed(dkv_work->Wait(), absl::StrCat("ring attention backward, last hop: rank ", r,
                                                 " receiving its own dK/dV from rank ", prev));
  }
  return {dq.to(q.scalar_type()), dkv_arriving[0].to(k.scalar_type()),
          dkv_arriving[1].to(v.scalar_type())};
}

void ThrowIfFailed(const absl::Status& status, const std::string& what) {
  if (status.ok()) return;
  throw CommFailure(absl::Status(status.code(), absl::StrCat(what, ": ", status.message())));
}

at::Tensor RingAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         c10::intrusive_ptr<CpState> state) {
  return RingFunction::apply(q, k, v, std::move(state))[0];
}

}  // namespace kp::parallel::internal
