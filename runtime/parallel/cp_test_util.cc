#include "runtime/parallel/cp_test_util.h"

#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

namespace kp::parallel::testing {

AttentionProblem MakeProblem(int64_t batch, int64_t heads, int64_t kv_heads, int64_t seq,
                             int64_t head_dim, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::TensorOptions o = at::TensorOptions().dtype(at::kDouble);
  AttentionProblem p;
  p.q = at::randn({batch, heads, seq, head_dim}, gen, o);
  p.k = at::randn({batch, kv_heads, seq, head_dim}, gen, o);
  p.v = at::randn({batch, kv_heads, seq, head_dim}, gen, o);
  p.dout = at::randn({batch, heads, seq, head_dim}, gen, o);
  return p;
}

AttentionResult ReferenceAttention(const AttentionProblem& p, bool causal) {
  at::Tensor q = p.q.detach().clone().set_requires_grad(true);
  at::Tensor k = p.k.detach().clone().set_requires_grad(true);
  at::Tensor v = p.v.detach().clone().set_requires_grad(true);
  const int64_t groups = q.size(1) / k.size(1);
  const at::Tensor ke = k.repeat_interleave(groups, 1), ve = v.repeat_interleave(groups, 1);
  at::Tensor s = at::matmul(q, ke.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(3)));
  if (causal) {
    const int64_t t = q.size(2);
    s = s.masked_fill(at::ones({t, t}, at::kBool).triu(1), -std::numeric_limits<double>::infinity());
  }
  at::Tensor out = at::matmul(at::softmax(s, -1), ve);
  torch::autograd::backward({out}, {p.dout});
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

double MaxAbsError(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace kp::parallel::testing
