#include "runtime/engine/fused_ops.h"

#include <cstdio>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContextLight.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/cross_entropy.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "runtime/common/status.h"

namespace kp::engine {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void CudaOk(cudaError_t err) {
  // A launch error here is a shape/pointer bug in this file, not bad input.
  if (err != cudaSuccess) std::fprintf(stderr, "fused kernel: %s\n", cudaGetErrorString(err));
  KP_CHECK(err == cudaSuccess);
}

// A gradient in the layout the backward kernel reads: bf16 with a
// contiguous last dimension (any other strides are fine). Autograd passes
// undefined gradients for outputs that did not reach the loss.
at::Tensor GradForKernel(const at::Tensor& grad, at::IntArrayRef sizes,
                         const at::TensorOptions& options) {
  if (!grad.defined()) return at::zeros(sizes, options);
  at::Tensor g = grad.scalar_type() == at::kBFloat16 ? grad : grad.to(at::kBFloat16);
  if (g.stride(-1) != 1 || g.dim() != static_cast<int64_t>(sizes.size())) g = g.contiguous();
  return g;
}

kernels::HeadStrides StridesOf(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2)};
}

class RopeQkvFunction : public torch::autograd::Function<RopeQkvFunction> {
 public:
  // cos, sin: fp32 [T, Dh/2] contiguous, on qkv's device.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& qkv_in,
                               const at::Tensor& cos, const at::Tensor& sin, int64_t n_heads,
                               int64_t n_kv_heads) {
    const at::Tensor qkv = qkv_in.contiguous();
    const kernels::RopeShape s = Shape(qkv, n_heads, n_kv_heads);
    KP_CHECK(cos.size(0) == s.seq && cos.size(1) == s.head_dim / 2);
    const c10::cuda::CUDAGuard guard(qkv.device());
    at::Tensor q = HeadsTensor(s, s.heads, qkv.options());
    at::Tensor k = HeadsTensor(s, s.kv_heads, qkv.options());
    at::Tensor v = HeadsTensor(s, s.kv_heads, qkv.options());
    CudaOk(kernels::RopeQkvForward(qkv.data_ptr(), cos.data_ptr<float>(), sin.data_ptr<float>(),
                                   s, q.data_ptr(), StridesOf(q), k.data_ptr(), StridesOf(k),
                                   v.data_ptr(), StridesOf(v), c10::cuda::getCurrentCUDAStream()));
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["heads"] = n_heads;
    ctx->saved_data["kv_heads"] = n_kv_heads;
    ctx->saved_data["batch"] = s.batch;
    return {q, k, v};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& cos = saved[0];
    const at::Tensor& sin = saved[1];
    kernels::RopeShape s;
    s.batch = ctx->saved_data["batch"].toInt();
    s.seq = cos.size(0);
    s.heads = ctx->saved_data["heads"].toInt();
    s.kv_heads = ctx->saved_data["kv_heads"].toInt();
    s.head_dim = cos.size(1) * 2;
    const auto options = cos.options().dtype(at::kBFloat16);
    const at::Tensor dq = GradForKernel(grads[0], {s.batch, s.heads, s.seq, s.head_dim}, options);
    const at::Tensor dk =
        GradForKernel(grads[1], {s.batch, s.kv_heads, s.seq, s.head_dim}, options);
    const at::Tensor dv =
        GradForKernel(grads[2], {s.batch, s.kv_heads, s.seq, s.head_dim}, options);
    const c10::cuda::CUDAGuard guard(cos.device());
    at::Tensor dqkv = at::empty({s.batch, s.seq, s.row_width()}, options);
    CudaOk(kernels::RopeQkvBackward(dq.data_ptr(), StridesOf(dq), dk.data_ptr(), StridesOf(dk),
                                    dv.data_ptr(), StridesOf(dv), cos.data_ptr<float>(),
                                    sin.data_ptr<float>(), s, dqkv.data_ptr(),
                                    c10::cuda::getCurrentCUDAStream()));
    return {dqkv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }

 private:
  // [B, heads, T, Dh] stored as [B, T, heads, Dh], the layout flash attention
  // works in: ATen's cuDNN attention allocates its output in q's layout, so
  // the block's [B, T, H Dh] view of the output is then free (no transposed
  // copy forward, and no layout-matching copy of its gradient backward).
  static at::Tensor HeadsTensor(const kernels::RopeShape& s, int64_t heads,
                                const at::TensorOptions& options) {
    return at::empty_strided({s.batch, heads, s.seq, s.head_dim},
                             {s.seq * heads * s.head_dim, s.head_dim, heads * s.head_dim, 1},
                             options);
  }

  static kernels::RopeShape Shape(const at::Tensor& qkv, int64_t n_heads, int64_t n_kv_heads) {
    KP_CHECK(qkv.dim() == 3 && qkv.scalar_type() == at::kBFloat16);
    const int64_t width = qkv.size(2);
    KP_CHECK(width % (n_heads + 2 * n_kv_heads) == 0);
    kernels::RopeShape s;
    s.batch = qkv.size(0);
    s.seq = qkv.size(1);
    s.heads = n_heads;
    s.kv_heads = n_kv_heads;
    s.head_dim = width / (n_heads + 2 * n_kv_heads);
    KP_CHECK(s.head_dim % 2 == 0);
    return s;
  }
};

class SwiGluFunction : public torch::autograd::Function<SwiGluFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate_up) {
    KP_CHECK(gate_up.scalar_type() == at::kBFloat16 && gate_up.size(-1) % 2 == 0);
    const int64_t cols = gate_up.size(-1) / 2;
    const at::Tensor g2 = Rows(gate_up);
    const c10::cuda::CUDAGuard guard(gate_up.device());
    at::Tensor out = at::empty({g2.size(0), cols}, gate_up.options());
    CudaOk(kernels::SwiGluForward(g2.data_ptr(), g2.stride(0), g2.size(0), cols, out.data_ptr(),
                                  c10::cuda::getCurrentCUDAStream()));
    ctx->save_for_backward({gate_up});
    std::vector<int64_t> sizes = gate_up.sizes().vec();
    sizes.back() = cols;
    return out.view(sizes);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor gate_up = ctx->get_saved_variables()[0];
    const int64_t cols = gate_up.size(-1) / 2;
    const at::Tensor g2 = Rows(gate_up);
    std::vector<int64_t> out_sizes = gate_up.sizes().vec();
    out_sizes.back() = cols;
    at::Tensor dout = GradForKernel(grads[0], out_sizes, gate_up.options());
    dout = Rows(dout);
    const c10::cuda::CUDAGuard guard(gate_up.device());
    at::Tensor dgu = at::empty({g2.size(0), 2 * cols}, gate_up.options());
    CudaOk(kernels::SwiGluBackward(dout.data_ptr(), dout.stride(0), g2.data_ptr(), g2.stride(0),
                                   g2.size(0), cols, dgu.data_ptr(),
                                   c10::cuda::getCurrentCUDAStream()));
    return {dgu.view(gate_up.sizes())};
  }

 private:
  // [..., n] as 2-D rows with a contiguous last dimension (a view when the
  // strides allow it).
  static at::Tensor Rows(const at::Tensor& t) {
    at::Tensor r = t.reshape({-1, t.size(-1)});
    // The kernels index rows by stride(0) even when there is one row.
    if (r.stride(1) != 1 || r.stride(0) < r.size(1)) r = r.clone(at::MemoryFormat::Contiguous);
    return r;
  }
};

class CrossEntropySumFunction : public torch::autograd::Function<CrossEntropySumFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits_in,
                            const at::Tensor& targets_in) {
    KP_CHECK(logits_in.dim() == 2 && logits_in.scalar_type() == at::kBFloat16 &&
             logits_in.is_cuda());
    KP_CHECK(targets_in.dim() == 1 && targets_in.size(0) == logits_in.size(0));
    const int64_t rows = logits_in.size(0), vocab = logits_in.size(1);
    KP_CHECK(vocab > 0);
    // The kernels index rows by stride(0), also when there is one row.
    const at::Tensor logits = logits_in.stride(1) == 1 && logits_in.stride(0) >= vocab
                                  ? logits_in
                                  : logits_in.contiguous();
    const at::Tensor targets = targets_in.to(logits.device(), at::kLong).contiguous();
    const c10::cuda::CUDAGuard guard(logits.device());
    const auto f32 = logits.options().dtype(at::kFloat);
    at::Tensor loss = at::empty({rows}, f32);
    at::Tensor lse = at::empty({rows}, f32);
    CudaOk(kernels::CrossEntropyForward(logits.data_ptr(), logits.stride(0), rows, vocab,
                                        targets.data_ptr<int64_t>(), loss.data_ptr<float>(),
                                        lse.data_ptr<float>(),
                                        c10::cuda::getCurrentCUDAStream()));
    ctx->save_for_backward({logits, lse, targets});
    return loss.sum();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // The first backward overwrote the logits: a second would read gradients.
    KP_CHECK(ctx->saved_data.count("consumed") == 0);
    ctx->saved_data["consumed"] = true;
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor logits = saved[0].detach();
    const at::Tensor& lse = saved[1];
    const at::Tensor& targets = saved[2];
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor()};
    // A 0-dim device tensor the kernel broadcasts (stride 0): no host sync.
    const at::Tensor scale = grads[0].to(logits.device(), at::kFloat).reshape({1}).contiguous();
    const c10::cuda::CUDAGuard guard(logits.device());
    CudaOk(kernels::CrossEntropyBackward(logits.data_ptr(), logits.stride(0), logits.size(0),
                                         logits.size(1), targets.data_ptr<int64_t>(),
                                         lse.data_ptr<float>(), scale.data_ptr<float>(),
                                         /*grad_row_stride=*/0, logits.data_ptr(),
                                         logits.stride(0), c10::cuda::getCurrentCUDAStream()));
    return {logits, at::Tensor()};
  }
};

}  // namespace

bool FusedKernelsApply(const c10::Device& device, at::ScalarType dtype) {
  if (!device.is_cuda() || dtype != at::kBFloat16) return false;
  // Built for sm_90a with compute_90 PTX: no image for older GPUs.
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(
      device.has_index() ? device.index() : c10::cuda::current_device());
  return prop != nullptr && prop->major >= 9;
}

at::ScalarType RopeTableDtype(bool fused, const c10::Device& device, at::ScalarType compute) {
  return fused && FusedKernelsApply(device, compute) ? at::kFloat : compute;
}

QkvHeads SplitQkvWithRopeReference(const at::Tensor& qkv, const RopeTable& rope, int64_t n_heads,
                                   int64_t n_kv_heads) {
  const int64_t b = qkv.size(0), t = qkv.size(1);
  const int64_t head_dim = qkv.size(2) / (n_heads + 2 * n_kv_heads);
  RopeTable table = rope;
  if (table.cos.scalar_type() != qkv.scalar_type()) {
    table = RopeTable{rope.cos.to(qkv.scalar_type()), rope.sin.to(qkv.scalar_type())};
  }
  // [B, T, (H + 2 Hkv) Dh] -> [B, T, H + 2 Hkv, Dh] -> per head [B, heads, T, Dh]
  auto parts = qkv.view({b, t, n_heads + 2 * n_kv_heads, head_dim})
                   .split({n_heads, n_kv_heads, n_kv_heads}, 2);
  return QkvHeads{ApplyRope(parts[0].transpose(1, 2), table),
                  ApplyRope(parts[1].transpose(1, 2), table), parts[2].transpose(1, 2)};
}

QkvHeads SplitQkvWithRope(const at::Tensor& qkv, const RopeTable& rope, int64_t n_heads,
                          int64_t n_kv_heads, bool fused) {
  if (!fused || !FusedKernelsApply(qkv.device(), qkv.scalar_type())) {
    return SplitQkvWithRopeReference(qkv, rope, n_heads, n_kv_heads);
  }
  KP_CHECK(!rope.cos.requires_grad() && !rope.sin.requires_grad());
  const at::Tensor cos = rope.cos.to(qkv.device(), at::kFloat).contiguous();
  const at::Tensor sin = rope.sin.to(qkv.device(), at::kFloat).contiguous();
  variable_list out = RopeQkvFunction::apply(qkv, cos, sin, n_heads, n_kv_heads);
  return QkvHeads{out[0], out[1], out[2]};
}

at::Tensor SwiGluActivation(const at::Tensor& gate_up, bool fused) {
  if (!fused || !FusedKernelsApply(gate_up.device(), gate_up.scalar_type())) {
    return SwiGlu(gate_up);
  }
  return SwiGluFunction::apply(gate_up);
}

at::Tensor FusedCrossEntropySum(const at::Tensor& logits, const at::Tensor& targets) {
  return CrossEntropySumFunction::apply(logits, targets);
}

}  // namespace kp::engine
