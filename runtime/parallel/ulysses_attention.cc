// Ulysses: all-to-all over heads. Each rank trades its sequence shard of all
// heads for the whole sequence of n_heads/cp heads, runs ordinary
// full-sequence attention, and trades back. K/V move at n_kv_heads width when
// n_kv_heads % cp == 0, else expanded to n_heads first.
#include <ATen/ATen.h>

#include "runtime/parallel/all_to_all.h"
#include "runtime/parallel/cp_modes.h"
#include "runtime/parallel/local_attention.h"
#include "runtime/parallel/zigzag.h"

namespace kp::parallel::internal {

at::Tensor UlyssesAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            c10::intrusive_ptr<CpState> state) {
  comm::Communicator* comm = state->comm;
  const int n = comm->size();
  const int64_t heads = q.size(1);
  at::Tensor kv = at::stack({k, v});  // [2, B, Hkv, L, D]: one exchange for both
  if (k.size(1) % n != 0) kv = kv.repeat_interleave(heads / k.size(1), 2);
  // Heads scattered, sequence gathered (in rank order), then natural order.
  const at::Tensor q_seq =
      ZigzagRankOrderToNatural(AllToAllAutograd(comm, q.contiguous(), 1, 2), 2, n);
  const at::Tensor kv_seq =
      ZigzagRankOrderToNatural(AllToAllAutograd(comm, kv.contiguous(), 2, 3), 3, n);
  LocalAttentionOptions local;
  local.causal = state->options.causal;
  local.scale = state->scale;
  local.backend = state->options.backend;
  local.merge = state->options.merge;
  const int64_t len = q_seq.size(2);
  const std::vector<Segment> segs = {{0, len, 0}};
  at::Tensor out_seq = std::get<0>(LocalAttentionWithLse(q_seq, kv_seq[0], kv_seq[1], segs, segs,
                                                         local));
  return AllToAllAutograd(comm, ZigzagNaturalToRankOrder(out_seq, 2, n).contiguous(), 2, 1);
}

}  // namespace kp::parallel::internal

namespace kp::parallel::internal {
namespace {

at::Tensor A2A(comm::Communicator& comm, const at::Tensor& x, int64_t scatter, int64_t gather,
               const char* what) {
  absl::StatusOr<at::Tensor> r = AllToAll(comm, x.contiguous(), scatter, gather);
  ThrowIfFailed(r.status(), what);
  return *r;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> UlyssesForwardBackward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dout,
    const CpState& state) {
  comm::Communicator& comm = *state.comm;
  const int n = comm.size();
  const int64_t heads = q.size(1), kv_heads = k.size(1), group = heads / kv_heads;
  const bool expand = kv_heads % n != 0;
  at::Tensor kv = at::stack({k, v});
  if (expand) kv = kv.repeat_interleave(group, 2);
  const at::Tensor q_seq =
      ZigzagRankOrderToNatural(A2A(comm, q, 1, 2, "ulysses forward: q"), 2, n);
  const at::Tensor kv_seq =
      ZigzagRankOrderToNatural(A2A(comm, kv, 2, 3, "ulysses forward: k/v"), 3, n);
  const BlockMask mask = state.options.causal ? BlockMask::kCausal : BlockMask::kFull;
  const BlockOutput blk = AttentionBlockForward(q_seq, kv_seq[0], kv_seq[1], mask, state.scale,
                                                state.options.backend);
  const at::Tensor out_seq = blk.out.to(q.scalar_type());
  const at::Tensor out =
      A2A(comm, ZigzagNaturalToRankOrder(out_seq, 2, n), 2, 1, "ulysses forward: out");

  const at::Tensor dout_seq =
      ZigzagRankOrderToNatural(A2A(comm, dout, 1, 2, "ulysses backward: dout"), 2, n);
  const BlockGrads g = AttentionBlockBackward(dout_seq, q_seq, kv_seq[0], kv_seq[1], out_seq,
                                              blk.lse, mask, state.scale, state.options.backend);
  const at::Tensor dq =
      A2A(comm, ZigzagNaturalToRankOrder(g.dq, 2, n), 2, 1, "ulysses backward: dq");
  at::Tensor dkv = A2A(comm, ZigzagNaturalToRankOrder(at::stack({g.dk, g.dv}), 3, n), 3, 2,
                       "ulysses backward: dk/dv");
  if (expand) {
    dkv = dkv.reshape({2, dkv.size(1), kv_heads, group, dkv.size(3), dkv.size(4)}).sum(3);
  }
  return {out, dq.to(q.scalar_type()), dkv[0].to(k.scalar_type()), dkv[1].to(v.scalar_type())};
}

}  // namespace kp::parallel::internal
