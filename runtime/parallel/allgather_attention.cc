// All-gather context parallelism (as Llama 3 trained): K/V gathered once at
// n_kv_heads width (with GQA far smaller than q), each rank attends its two
// zigzag chunks to the prefix they see; the backward reduce-scatters dK/dV in
// float32. The gathered K/V stay saved for the backward (memory: the whole
// sequence's K/V on every rank, the price of this mode).
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

std::vector<BlockTask> Tasks(int rank, int n, int64_t local_len, bool causal) {
  return PlanBlocks(ZigzagSegments(rank, n, local_len / 2), {{0, local_len * n, 0}}, causal);
}

struct AllGatherFunction : public torch::autograd::Function<AllGatherFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v, c10::intrusive_ptr<CpState> state) {
    AllGatherSaved s = AllGatherForward(q, k, v, *state);
    ctx->save_for_backward({q, s.k_full, s.v_full, s.out, s.lse});
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    ctx->saved_data["k_dtype"] = static_cast<int64_t>(k.scalar_type());
    return {s.out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    auto state =
        c10::static_intrusive_pointer_cast<CpState>(ctx->saved_data["state"].toCapsule());
    const auto kv_dtype = static_cast<at::ScalarType>(ctx->saved_data["k_dtype"].toInt());
    const AllGatherSaved s{saved[3], saved[4], saved[1], saved[2]};
    const at::Tensor dout = grads[0].defined() ? grads[0] : at::zeros_like(s.out);
    auto [dq, dk, dv] = AllGatherBackward(dout, saved[0], s, kv_dtype, *state);
    return {dq, dk, dv, at::Tensor()};
  }
};

}  // namespace

AllGatherSaved AllGatherForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const CpState& state_ref) {
  const CpState* state = &state_ref;
  comm::Communicator* comm = state->comm;
  const int n = comm->size(), r = comm->rank();
  const int64_t len = k.size(2);
  const at::Tensor kv = at::stack({k, v}).contiguous();  // [2, B, Hkv, L, D]
  std::vector<int64_t> gsizes = {n};
  for (int64_t s : kv.sizes()) gsizes.push_back(s);
  at::Tensor gathered = at::empty(gsizes, kv.options());
  ThrowIfFailed(comm->AllGather(kv, gathered),
                absl::StrCat("all-gather attention forward: rank ", r, " gathering K/V"));
  const at::Tensor by_rank = gathered.permute({1, 2, 3, 0, 4, 5})
                                 .reshape({2, kv.size(1), kv.size(2), n * len, kv.size(4)});
  const at::Tensor full = ZigzagRankOrderToNatural(by_rank, 3, n).contiguous();
  const at::Tensor k_full = full[0], v_full = full[1];
  BlockFolder merged(BlockFolder::Kind::kLseMerge, q, state->options.merge,
                     state->options.fold_max_pending);
  RunForwardTasks(q, k_full, v_full, Tasks(r, n, len, state->options.causal), state->scale,
                  state->options.backend, merged);
  auto [out, lse] = merged.Finish(q.scalar_type());
  return {out, lse, k_full, v_full};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> AllGatherBackward(
    const at::Tensor& dout, const at::Tensor& q, const AllGatherSaved& saved,
    at::ScalarType kv_dtype, const CpState& state_ref) {
  const CpState* state = &state_ref;
  const at::Tensor &k_full = saved.k_full, &v_full = saved.v_full, &out = saved.out,
                   &lse = saved.lse;
  comm::Communicator* comm = state->comm;
  const int n = comm->size(), r = comm->rank();
  const int64_t len = k_full.size(2) / n;
  const at::ScalarType acc_dt = AccumulationDtype(q);

  const int pending = state->options.fold_max_pending;
  BlockFolder dq(BlockFolder::Kind::kSum, q, MergeMode::kStable, pending);
  BlockFolder dk(BlockFolder::Kind::kSum, k_full, MergeMode::kStable, pending);
  BlockFolder dv(BlockFolder::Kind::kSum, v_full, MergeMode::kStable, pending);
  RunBackwardTasks(dout.contiguous(), q, k_full, v_full, out, lse,
                   Tasks(r, n, len, state->options.causal),
                   state->scale, state->options.backend, dq, dk, dv);
  at::Tensor dkv_full = at::empty({2, k_full.size(0), k_full.size(1), k_full.size(2),
                                   k_full.size(3)},
                                  k_full.options().dtype(acc_dt));
  dk.FinishInto(dkv_full[0], at::Tensor());
  dv.FinishInto(dkv_full[1], at::Tensor());
  // Back to rank order, one slice per owner, and summed at the owner.
  const at::Tensor by_rank = ZigzagNaturalToRankOrder(dkv_full, 3, n)
                                 .reshape({2, k_full.size(0), k_full.size(1), n, len,
                                           k_full.size(3)})
                                 .permute({3, 0, 1, 2, 4, 5})
                                 .contiguous();
  at::Tensor mine = at::empty({2, k_full.size(0), k_full.size(1), len, k_full.size(3)},
                              dkv_full.options());
  ThrowIfFailed(comm->ReduceScatter(by_rank, mine, comm::ReduceOp::kSum),
                absl::StrCat("all-gather attention backward: rank ", r,
                             " reduce-scattering dK/dV"));
  return {dq.Finish(q.scalar_type()).first, mine[0].to(kv_dtype), mine[1].to(kv_dtype)};
}

at::Tensor AllGatherAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              c10::intrusive_ptr<CpState> state) {
  return AllGatherFunction::apply(q, k, v, std::move(state))[0];
}

}  // namespace kp::parallel::internal
