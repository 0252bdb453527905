#include "runtime/parallel/local_attention.h"

#include <cmath>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "runtime/common/status.h"

namespace kp::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::vector<int64_t> Flatten(const std::vector<Segment>& segs) {
  std::vector<int64_t> flat;
  for (const Segment& s : segs) {
    flat.push_back(s.offset);
    flat.push_back(s.length);
    flat.push_back(s.position);
  }
  return flat;
}

std::vector<Segment> Unflatten(const std::vector<int64_t>& flat) {
  std::vector<Segment> segs;
  for (size_t i = 0; i + 2 < flat.size(); i += 3) segs.push_back({flat[i], flat[i + 1], flat[i + 2]});
  return segs;
}

bool CoversEverything(const std::vector<BlockTask>& tasks, const at::Tensor& q,
                      const at::Tensor& k) {
  return tasks.size() == 1 && tasks[0].q_offset == 0 && tasks[0].q_length == q.size(2) &&
         tasks[0].k_offset == 0 && tasks[0].k_length == k.size(2);
}

struct LocalAttentionFunction : public torch::autograd::Function<LocalAttentionFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v, const std::vector<Segment>& q_segments,
                               const std::vector<Segment>& k_segments,
                               const LocalAttentionOptions& options) {
    const double scale = ResolveScale(options.scale, q);
    const std::vector<BlockTask> tasks = PlanBlocks(q_segments, k_segments, options.causal);
    at::Tensor out, lse;
    if (CoversEverything(tasks, q, k)) {
      // One call over all rows (cp = 1, Ulysses): its output is the answer,
      // no accumulator pass; this is what makes cp = 1 cost nothing.
      BlockOutput blk = AttentionBlockForward(q, k, v, tasks[0].mask, scale, options.backend);
      out = blk.out.to(q.scalar_type());
      lse = blk.lse;
    } else {
      BlockFolder merged(BlockFolder::Kind::kLseMerge, q, options.merge);
      RunForwardTasks(q, k, v, tasks, scale, options.backend, merged);
      std::tie(out, lse) = merged.Finish(q.scalar_type());
    }
    ctx->save_for_backward({q, k, v, out, lse});
    ctx->saved_data["q_segments"] = Flatten(q_segments);
    ctx->saved_data["k_segments"] = Flatten(k_segments);
    ctx->saved_data["causal"] = options.causal;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["backend"] = static_cast<int64_t>(options.backend);
    ctx->mark_non_differentiable({lse});
    return {out, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
    const auto tasks = PlanBlocks(Unflatten(ctx->saved_data["q_segments"].toIntVector()),
                                  Unflatten(ctx->saved_data["k_segments"].toIntVector()),
                                  ctx->saved_data["causal"].toBool());
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto backend = static_cast<AttnBackend>(ctx->saved_data["backend"].toInt());
    at::Tensor dout = grads[0].defined() ? grads[0] : at::zeros_like(out);
    if (CoversEverything(tasks, q, k)) {
      const BlockGrads g =
          AttentionBlockBackward(dout, q, k, v, out, lse, tasks[0].mask, scale, backend);
      return {g.dq.to(q.scalar_type()), g.dk.to(k.scalar_type()), g.dv.to(v.scalar_type()),
              at::Tensor(), at::Tensor(), at::Tensor()};
    }
    BlockFolder dq(BlockFolder::Kind::kSum, q), dk(BlockFolder::Kind::kSum, k),
        dv(BlockFolder::Kind::kSum, v);
    RunBackwardTasks(dout, q, k, v, out, lse, tasks, scale, backend, dq, dk, dv);
    return {dq.Finish(q.scalar_type()).first, dk.Finish(k.scalar_type()).first,
            dv.Finish(v.scalar_type()).first, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::ScalarType AccumulationDtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

double ResolveScale(double scale, const at::Tensor& q) {
  return scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
}

void RunForwardTasks(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::vector<BlockTask>& tasks, double scale, AttnBackend backend,
                     BlockFolder& out) {
  for (const BlockTask& t : tasks) {
    const BlockOutput blk = AttentionBlockForward(
        q.narrow(2, t.q_offset, t.q_length), k.narrow(2, t.k_offset, t.k_length),
        v.narrow(2, t.k_offset, t.k_length), t.mask, scale, backend);
    out.Add(t.q_offset, blk.out, blk.lse);
  }
}

void RunBackwardTasks(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                      const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                      const std::vector<BlockTask>& tasks, double scale, AttnBackend backend,
                      BlockFolder& dq, const KvGradSink& dkv) {
  for (const BlockTask& t : tasks) {
    const BlockGrads g = AttentionBlockBackward(
        dout.narrow(2, t.q_offset, t.q_length), q.narrow(2, t.q_offset, t.q_length),
        k.narrow(2, t.k_offset, t.k_length), v.narrow(2, t.k_offset, t.k_length),
        out.narrow(2, t.q_offset, t.q_length), lse.narrow(2, t.q_offset, t.q_length), t.mask,
        scale, backend);
    dq.Add(t.q_offset, g.dq);
    dkv(t, g.dk, g.dv);
  }
}

void RunBackwardTasks(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                      const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                      const std::vector<BlockTask>& tasks, double scale, AttnBackend backend,
                      BlockFolder& dq, BlockFolder& dk, BlockFolder& dv) {
  RunBackwardTasks(dout, q, k, v, out, lse, tasks, scale, backend, dq,
                   [&dk, &dv](const BlockTask& t, const at::Tensor& gk, const at::Tensor& gv) {
                     dk.Add(t.k_offset, gk);
                     dv.Add(t.k_offset, gv);
                   });
}

std::tuple<at::Tensor, at::Tensor> LocalAttentionWithLse(const at::Tensor& q, const at::Tensor& k,
                                                         const at::Tensor& v,
                                                         const std::vector<Segment>& q_segments,
                                                         const std::vector<Segment>& k_segments,
                                                         const LocalAttentionOptions& options) {
  variable_list r = LocalAttentionFunction::apply(q, k, v, q_segments, k_segments, options);
  return {r[0], r[1]};
}

std::tuple<at::Tensor, at::Tensor> CausalAttentionWithLse(const at::Tensor& q, const at::Tensor& k,
                                                          const at::Tensor& v,
                                                          const LocalAttentionOptions& options) {
  KP_CHECK(q.size(2) == k.size(2));
  const std::vector<Segment> segs = {{0, q.size(2), 0}};
  return LocalAttentionWithLse(q, k, v, segs, segs, options);
}

}  // namespace kp::parallel
