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
