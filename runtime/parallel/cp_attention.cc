#include "runtime/parallel/cp_attention.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "runtime/parallel/block_fold.h"
#include "runtime/parallel/cp_modes.h"
#include "runtime/parallel/local_attention.h"

namespace kp::parallel {
namespace {

std::string Shape(const at::Tensor& t) { return c10::str(t.sizes()); }

absl::Status ValidateInputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int cp,
                            int rank, const CpOptions& options) {
  const std::string who = absl::StrCat("context-parallel attention (rank ", rank, " of ", cp, "): ");
  if (options.fold_max_pending < 1 || options.fold_max_pending > BlockFolder::kMaxPending) {
    return absl::InvalidArgumentError(absl::StrCat(who, "fold_max_pending is ",
                                                   options.fold_max_pending, "; it must be 1..",
                                                   BlockFolder::kMaxPending));
  }
  if (!q.defined() || !k.defined() || !v.defined()) {
    return absl::InvalidArgumentError(who + "q, k and v must be defined");
  }
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(who, "q, k, v must be [B, H, T_local, D]; got ",
                                                   Shape(q), ", ", Shape(k), ", ", Shape(v)));
  }
  if (k.sizes() != v.sizes()) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, "k and v shapes differ: ", Shape(k), " vs ", Shape(v)));
  }
  if (q.size(0) != k.size(0) || q.size(2) != k.size(2) || q.size(3) != k.size(3)) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, "q ", Shape(q), " and k ", Shape(k), " must agree in batch, local length and head dim"));
  }
  if (k.size(1) == 0 || q.size(1) % k.size(1) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(who, "n_heads ", q.size(1),
                                                   " is not a multiple of n_kv_heads ", k.size(1)));
  }
  if (q.scalar_type() != k.scalar_type() || q.scalar_type() != v.scalar_type() ||
      q.device() != k.device() || q.device() != v.device()) {
    return absl::InvalidArgumentError(who + "q, k, v must share dtype and device");
  }
  if (cp > 1 && q.size(2) % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, "the local length ", q.size(2), " must be even (two zigzag chunks); the total length ",
        q.size(2) * cp, " must be a multiple of 2*cp = ", 2 * cp));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CpModeChoice> ResolveCpMode(const at::Tensor& q, const at::Tensor& k, int cp,
                                           const CpOptions& options, bool log) {
  CpShape shape;
  shape.batch = q.size(0);
  shape.heads = q.size(1);
  shape.kv_heads = k.size(1);
  shape.seq_len = q.size(2) * cp;
  shape.head_dim = q.size(3);
  shape.element_bytes = static_cast<int64_t>(q.element_size());
  CpTopology topology = options.topology;
  topology.cp = cp;
  return ChooseCpMode(shape, topology, options.mode, log);
}

absl::StatusOr<at::Tensor> ContextParallelAttention(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v,
                                                    comm::Communicator* comm,
                                                    const CpOptions& options) {
  const int cp = comm == nullptr ? 1 : comm->size();
  const int rank = comm == nullptr ? 0 : comm->rank();
  KP_RETURN_IF_ERROR(ValidateInputs(q, k, v, cp, rank, options));
  if (cp == 1) {
    // The pass-through: exactly the local attention the engine runs without CP.
    LocalAttentionOptions local;
    local.causal = options.causal;
    local.scale = options.scale;
    local.backend = options.backend;
    local.merge = options.merge;
    const std::vector<Segment> segs = {{0, q.size(2), 0}};
    return std::get<0>(LocalAttentionWithLse(q, k, v, segs, segs, local));
  }
  KP_ASSIGN_OR_RETURN(const CpModeChoice choice, ResolveCpMode(q, k, cp, options, /*log=*/false));
  auto state = c10::make_intrusive<internal::CpState>();
  state->comm = comm;
  state->options = options;
  state->scale = ResolveScale(options.scale, q);
  try {
    switch (choice.mode) {
      case CpMode::kRing:
        return internal::RingAttention(q, k, v, state);
      case CpMode::kAllGather:
        return internal::AllGatherAttention(q, k, v, state);
      case CpMode::kUlysses:
        return internal::UlyssesAttention(q, k, v, state);
      default:
        return absl::InternalError(
            absl::StrCat("context-parallel mode ", CpModeName(choice.mode), " at cp ", cp));
    }
  } catch (const internal::CommFailure& e) {
    return e.status();
  }
}

absl::StatusOr<CpForwardBackwardResult> ContextParallelAttentionForwardBackward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dout,
    comm::Communicator* comm, const CpOptions& options) {
  const int cp = comm == nullptr ? 1 : comm->size();
  const int rank = comm == nullptr ? 0 : comm->rank();
  KP_RETURN_IF_ERROR(ValidateInputs(q, k, v, cp, rank, options));
  if (!dout.defined() || dout.sizes() != q.sizes()) {
    return absl::InvalidArgumentError("context-parallel attention: dout must have q's shape");
  }
  auto state = c10::make_intrusive<internal::CpState>();
  state->comm = comm;
  state->options = options;
  state->scale = ResolveScale(options.scale, q);
  if (cp == 1) {
    const BlockMask mask = options.causal ? BlockMask::kCausal : BlockMask::kFull;
    const BlockOutput o = AttentionBlockForward(q, k, v, mask, state->scale, options.backend);
    const at::Tensor out = o.out.to(q.scalar_type());
    const BlockGrads g =
        AttentionBlockBackward(dout, q, k, v, out, o.lse, mask, state->scale, options.backend);
    return CpForwardBackwardResult{out, g.dq.to(q.scalar_type()), g.dk.to(k.scalar_type()),
                                   g.dv.to(v.scalar_type())};
  }
  KP_ASSIGN_OR_RETURN(const CpModeChoice choice, ResolveCpMode(q, k, cp, options, /*log=*/false));
  try {
    switch (choice.mode) {
      case CpMode::kRing: {
        const internal::RingSaved saved = internal::RingForward(q, k, v, *state);
        auto [dq, dk, dv] = internal::RingBackward(dout, q, saved, *state);
        return CpForwardBackwardResult{saved.out, dq, dk, dv};
      }
      case CpMode::kAllGather: {
        const internal::AllGatherSaved s = internal::AllGatherForward(q, k, v, *state);
        auto [dq, dk, dv] = internal::AllGatherBackward(dout, q, s, k.scalar_type(), *state);
        return CpForwardBackwardResult{s.out, dq, dk, dv};
      }
      case CpMode::kUlysses: {
        auto [out, dq, dk, dv] = internal::UlyssesForwardBackward(q, k, v, dout, *state);
        return CpForwardBackwardResult{out, dq, dk, dv};
      }
      default:
        return absl::InternalError(
            absl::StrCat("context-parallel mode ", CpModeName(choice.mode), " at cp ", cp));
    }
  } catch (const internal::CommFailure& e) {
    return e.status();
  }
}

}  // namespace kp::parallel
