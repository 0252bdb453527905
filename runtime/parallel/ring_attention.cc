// Ring pass-KV attention over zigzag shards.
//
// Forward, rank r of N, step t = 0..N-1: holds the K/V of rank s = r - t and
// sends it on to r+1 while attending its queries to it (the transfer of step
// t+1 overlaps the attention of step t). Backward: the K/V pass around again;
// at step t rank r computes block s's dK/dV share and sends it straight to
// its owner s (receiving from r + t the share of its own block), in K/V's
// dtype and only the rows its queries see, while the next step computes.
//
// Why shares go to their owner rather than an accumulator travelling the
// ring: the attention backward hands out each block's dK/dV in bf16, so
// sending them as they are loses nothing (the owner sums them in float32 and
// rounds once); the travelling float32 accumulator instead sent 2 x 4 bytes
// per element of the whole block at every step and read and wrote it on every
// rank, which cost the split ~4% of the attention time at cp 8 on one GPU.
// Every block's partial output, dQ and dK/dV fold once, at the end, from the
// blocks themselves (block_fold.h).
#include <algorithm>
#include <vector>

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
  BlockFolder merged(BlockFolder::Kind::kLseMerge, q, state->options.merge,
                     state->options.fold_max_pending);
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
  const bool causal = state->options.causal;
  const int pending = state->options.fold_max_pending;
  const at::Tensor& kv = saved.kv;

  BlockFolder dq(BlockFolder::Kind::kSum, q, MergeMode::kStable, pending);
  // This rank's own K/V gradients: its own share and every other rank's.
  BlockFolder dk(BlockFolder::Kind::kSum, kv[0], MergeMode::kStable, pending);
  BlockFolder dv(BlockFolder::Kind::kSum, kv[1], MergeMode::kStable, pending);
  struct Share {
    int64_t k_offset;
    at::Tensor dk, dv;  // received (or kept alive while being sent)
  };
  std::vector<Share> arriving, leaving;
  std::vector<std::unique_ptr<comm::Work>> share_work;
  // Waits for step t's shares, then hands the arrived ones to the folders.
  auto land_shares = [&](int t) {
    for (auto& w : share_work) {
      ThrowIfFailed(w->Wait(), absl::StrCat("ring attention backward, step ", t, ": rank ", r,
                                            " exchanging dK/dV shares (to rank ",
                                            (r - t + n) % n, ", from rank ", (r + t) % n, ")"));
    }
    share_work.clear();
    for (const Share& s : arriving) {
      dk.Add(s.k_offset, s.dk);
      dv.Add(s.k_offset, s.dv);
    }
    arriving.clear();
    leaving.clear();
  };

  at::Tensor cur = kv;
  for (int t = 0; t < n; ++t) {
    const int src = (r - t + n) % n;
    at::Tensor incoming;
    std::unique_ptr<comm::Work> kv_work;
    if (t + 1 < n) {
      incoming = at::empty_like(cur);
      kv_work = comm->SendRecvAsync(cur, next, incoming, prev);
    }
    const std::vector<BlockTask> tasks = StepTasks(r, src, n, chunk, causal);
    if (t == 0) {
      RunBackwardTasks(dout, q, cur[0], cur[1], saved.out, saved.lse, tasks, state->scale,
                       state->options.backend, dq, dk, dv);
    } else {
      std::vector<Share> mine;
      RunBackwardTasks(dout, q, cur[0], cur[1], saved.out, saved.lse, tasks, state->scale,
                       state->options.backend, dq,
                       [&mine](const BlockTask& task, const at::Tensor& gk, const at::Tensor& gv) {
                         mine.push_back({task.k_offset, gk.contiguous(), gv.contiguous()});
                       });
      land_shares(t - 1);
      // What rank r + t computed against this rank's K/V at its step t: the
      // same plan from its side, so both agree on the rows without a header.
      const int from = (r + t) % n;
      for (const BlockTask& task : StepTasks(from, r, n, chunk, causal)) {
        const auto opts = kv.options();
        const std::vector<int64_t> shape = {kv.size(1), kv.size(2), task.k_length, kv.size(4)};
        arriving.push_back({task.k_offset, at::empty(shape, opts), at::empty(shape, opts)});
      }
      const size_t pairs = std::max(mine.size(), arriving.size());
      for (size_t i = 0; i < pairs; ++i) {
        at::Tensor send_k, send_v, recv_k, recv_v;
        if (i < mine.size()) send_k = mine[i].dk.to(kv.scalar_type()), send_v = mine[i].dv.to(kv.scalar_type());
        if (i < arriving.size()) recv_k = arriving[i].dk, recv_v = arriving[i].dv;
        share_work.push_back(comm->SendRecvAsync(send_k, src, recv_k, from));
        share_work.push_back(comm->SendRecvAsync(send_v, src, recv_v, from));
        if (i < mine.size()) leaving.push_back({0, send_k, send_v});
      }
    }
    if (kv_work) {
      ThrowIfFailed(kv_work->Wait(), absl::StrCat("ring attention backward, step ", t, ": rank ",
                                                  r, " receiving K/V from rank ", prev));
      cur = incoming;
    }
  }
  land_shares(n - 1);
  return {dq.Finish(q.scalar_type()).first, dk.Finish(kv.scalar_type()).first,
          dv.Finish(kv.scalar_type()).first};
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
