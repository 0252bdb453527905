// Ring pass-KV attention over zigzag shards.
//
// Forward, rank r of N, step t = 0..N-1: holds the K/V of rank s = r - t and
// sends it on to r+1 while attending its queries to it (the transfer of step
// t+1 overlaps the attention of step t). Backward: the K/V pass around again;
// the dK/dV accumulator of each block travels with it, each rank adding its
// share, and one last hop brings it home to its owner.
//
// Memory traffic besides attention (what keeps a split close to one full
// attention call): every block's partial output and dQ are folded once, at
// the end, from the blocks themselves (block_fold.h); each step's dK/dV
// shares are added into the travelling float32 accumulator in one pass, the
// first step writes it without reading zeros, and the last step rounds the
// sum to K/V's dtype as it adds, so the last hop carries half the bytes and
// the owner has nothing left to convert.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "absl/strings/str_cat.h"
#include "runtime/parallel/block_fold.h"
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
    RingSaved s = RingForward(q, k, v, *state);
    // The stacked K/V rather than k and v: the backward sends it as it is.
    ctx->save_for_backward({q, s.kv, s.out, s.lse});
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    return {s.out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    auto state = c10::static_intrusive_pointer_cast<CpState>(
        ctx->saved_data["state"].toCapsule());
    const RingSaved s{saved[2], saved[3], saved[1]};
    // Dense once here, so each block's dO slice shares O's strides and the
    // attention backward takes it without a copy per block.
    const at::Tensor dout = grads[0].defined() ? grads[0].contiguous() : at::zeros_like(s.out);
    auto [dq, dk, dv] = RingBackward(dout, saved[0], s, *state);
    return {dq, dk, dv, at::Tensor()};
  }
};

}  // namespace

RingSaved RingForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const CpState& state_ref) {
  const CpState* state = &state_ref;
  comm::Communicator* comm = state->comm;
  const int n = comm->size(), r = comm->rank();
  const int next = (r + 1) % n, prev = (r - 1 + n) % n;
  const int64_t chunk = q.size(2) / 2;
  BlockFolder merged(BlockFolder::Kind::kLseMerge, q, state->options.merge);
  const at::Tensor local_kv = at::stack({k, v});  // one transfer per step
  at::Tensor cur = local_kv;
  for (int t = 0; t < n; ++t) {
    const int src = (r - t + n) % n;
    at::Tensor incoming;
    std::unique_ptr<comm::Work> work;
    if (t + 1 < n) {
      incoming = at::empty_like(cur);
      work = comm->SendRecvAsync(cur, next, incoming, prev);
    }
    RunForwardTasks(q, cur[0], cur[1], StepTasks(r, src, n, chunk, state->options.causal),
                    state->scale, state->options.backend, merged);
    if (work) {
      ThrowIfFailed(work->Wait(), absl::StrCat("ring attention forward, step ", t, ": rank ", r,
                                               " receiving K/V from rank ", prev));
      cur = incoming;
    }
  }
  auto [out, lse] = merged.Finish(q.scalar_type());
  return {out, lse, local_kv};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> RingBackward(const at::Tensor& dout,
                                                            const at::Tensor& q,
                                                            const RingSaved& saved,
                                                            const CpState& state_ref) {
  const CpState* state = &state_ref;
  comm::Communicator* comm = state->comm;
  const int n = comm->size(), r = comm->rank();
  const int next = (r + 1) % n, prev = (r - 1 + n) % n;
  const int64_t chunk = q.size(2) / 2;
  const at::Tensor& kv = saved.kv;
  const at::ScalarType acc_dt = AccumulationDtype(kv), kv_dt = kv.scalar_type();

  BlockFolder dq(BlockFolder::Kind::kSum, q);
  at::Tensor cur = kv;
  at::Tensor dkv_sending, dkv_arriving;  // kept alive until their transfer completes
  std::unique_ptr<comm::Work> dkv_work;
  for (int t = 0; t < n; ++t) {
    const int src = (r - t + n) % n;
    const bool last = t + 1 == n;
    at::Tensor incoming;
    std::unique_ptr<comm::Work> kv_work;
    if (!last) {
      incoming = at::empty_like(cur);
      kv_work = comm->SendRecvAsync(cur, next, incoming, prev);
    }
    BlockFolder dk(BlockFolder::Kind::kSum, cur[0]), dv(BlockFolder::Kind::kSum, cur[1]);
    RunBackwardTasks(dout, q, cur[0], cur[1], saved.out, saved.lse,
                     StepTasks(r, src, n, chunk, state->options.causal), state->scale,
                     state->options.backend, dq, dk, dv);
    // Block src's accumulator: the one arriving from the previous rank (none
    // at t = 0), waited for only now that this step's attention is queued.
    at::Tensor base;
    if (dkv_work) {
      ThrowIfFailed(dkv_work->Wait(), absl::StrCat("ring attention backward, step ", t, ": rank ",
                                                   r, " receiving dK/dV from rank ", prev));
      dkv_work.reset();
      base = dkv_arriving;
    }
    const at::Tensor dkv = FoldKvGrads(dk, dv, base, cur, last);
    if (n > 1) {
      dkv_sending = dkv;
      dkv_arriving = at::empty(cur.sizes(), cur.options().dtype(last ? kv_dt : acc_dt));
      dkv_work = comm->SendRecvAsync(dkv_sending, next, dkv_arriving, prev);
    } else {
      dkv_arriving = dkv;
    }
    if (kv_work) {
      ThrowIfFailed(kv_work->Wait(), absl::StrCat("ring attention backward, step ", t, ": rank ",
                                                  r, " receiving K/V from rank ", prev));
      cur = incoming;
    }
  }
  if (dkv_work) {
    ThrowIfFailed(dkv_work->Wait(), absl::StrCat("ring attention backward, last hop: rank ", r,
                                                 " receiving its own dK/dV from rank ", prev));
  }
  return {dq.Finish(q.scalar_type()).first, dkv_arriving[0], dkv_arriving[1]};
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
