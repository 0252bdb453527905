// Local attention that also returns the log-sum-exp, with causal masking by
// explicit position ranges: a rank's query chunks attend other chunks fully,
// partly (the square diagonal block) or not at all. Differentiable
// (a torch::autograd::Function); the backward runs each block's backward with
// the final output and LSE.
//
// The task-level helpers (RunForwardTasks / RunBackwardTasks) are what the
// ring, all-gather and simulated-CP paths build on.
#ifndef KP_RUNTIME_PARALLEL_LOCAL_ATTENTION_H_
#define KP_RUNTIME_PARALLEL_LOCAL_ATTENTION_H_

#include <functional>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/parallel/attention_block.h"
#include "runtime/parallel/block_fold.h"
#include "runtime/parallel/block_plan.h"
#include "runtime/parallel/lse_merge.h"

namespace kp::parallel {

struct LocalAttentionOptions {
  bool causal = true;
  double scale = 0.0;  // 0: 1/sqrt(head_dim)
  AttnBackend backend = AttnBackend::kAuto;
  MergeMode merge = MergeMode::kStable;
};

double ResolveScale(double scale, const at::Tensor& q);

// q: [B, H, Tq, D] with rows described by q_segments; k, v: [B, Hkv, Tk, D]
// with rows described by k_segments. Returns out [B, H, Tq, D] (q's dtype) and
// lse [B, H, Tq] (float32; float64 for float64 inputs; -inf for rows that see
// no key, whose output is 0). Gradients flow to q, k and v through out.
std::tuple<at::Tensor, at::Tensor> LocalAttentionWithLse(const at::Tensor& q, const at::Tensor& k,
                                                         const at::Tensor& v,
                                                         const std::vector<Segment>& q_segments,
                                                         const std::vector<Segment>& k_segments,
                                                         const LocalAttentionOptions& options);

// Plain causal attention over one contiguous sequence (positions 0..T-1).
std::tuple<at::Tensor, at::Tensor> CausalAttentionWithLse(const at::Tensor& q, const at::Tensor& k,
                                                          const at::Tensor& v,
                                                          const LocalAttentionOptions& options);

// Runs tasks of q against one K/V block and hands each block's partial output
// and LSE to `out` (a kLseMerge folder shaped like q).
void RunForwardTasks(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::vector<BlockTask>& tasks, double scale, AttnBackend backend,
                     BlockFolder& out);

// Runs the tasks' backward; each block's dQ goes to the kSum folder dq (rows
// of q) and its dK/dV to `dkv` with the task they belong to. out and lse are
// the final merged output and LSE of q's rows.
using KvGradSink =
    std::function<void(const BlockTask& task, const at::Tensor& dk, const at::Tensor& dv)>;
void RunBackwardTasks(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                      const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                      const std::vector<BlockTask>& tasks, double scale, AttnBackend backend,
                      BlockFolder& dq, const KvGradSink& dkv);

// The same with dK/dV going to kSum folders dk and dv (rows of k, v). The
// caller folds when it has every block: typically once per attention call.
void RunBackwardTasks(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                      const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                      const std::vector<BlockTask>& tasks, double scale, AttnBackend backend,
                      BlockFolder& dq, BlockFolder& dk, BlockFolder& dv);

// The accumulation dtype of gradients and outputs: float64 for float64
// inputs, float32 otherwise.
at::ScalarType AccumulationDtype(const at::Tensor& t);

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_LOCAL_ATTENTION_H_
