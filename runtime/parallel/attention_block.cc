#include "runtime/parallel/attention_block.h"

#include <cmath>
#include <limits>

#include <ATen/ATen.h>

#include "runtime/common/status.h"

namespace kp::parallel {
namespace {

bool FusedCapable(const at::Tensor& q) {
  return q.is_cuda() && (q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf);
}

// The math path computes in float64 for float64 inputs and float32 otherwise
// (bf16/fp16 are upcast: the CPU path is a reference, not a fast path).
at::ScalarType MathDtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Grouped-query attention without expanding K/V: q [B, H, T, D] viewed as
// [B, Hkv, G*T, D] puts the G query heads that share kv head j next to each
// other, matching repeat_interleave's head order.
at::Tensor GroupQueries(const at::Tensor& q, int64_t kv_heads) {
  const int64_t b = q.size(0), h = q.size(1), t = q.size(2), d = q.size(3);
  return q.reshape({b, kv_heads, (h / kv_heads) * t, d});
}

at::Tensor UngroupQueries(const at::Tensor& x, int64_t heads) {
  const int64_t b = x.size(0), kv = x.size(1), d = x.size(3);
  const int64_t t = x.size(2) / (heads / kv);
  return x.reshape({b, heads, t, d});
}

// [G*Tq, Tk] boolean mask, true where the key is hidden.
at::Tensor CausalHiddenMask(int64_t groups, int64_t tq, int64_t tk, const at::Device& device) {
  at::Tensor hidden = at::ones({tq, tk}, at::TensorOptions().dtype(at::kBool).device(device))
                          .triu(1);
  return groups == 1 ? hidden : hidden.repeat({groups, 1});
}

at::Tensor MaskedScores(const at::Tensor& qg, const at::Tensor& k, BlockMask mask, double scale,
                        int64_t groups) {
  at::Tensor s = at::matmul(qg, k.transpose(-2, -1)) * scale;
  if (mask == BlockMask::kCausal) {
    s = s.masked_fill(CausalHiddenMask(groups, s.size(2) / groups, s.size(3), s.device()),
                      -std::numeric_limits<double>::infinity());
  }
  return s;
}

BlockOutput MathForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        BlockMask mask, double scale) {
  const at::ScalarType dt = MathDtype(q);
  const int64_t heads = q.size(1), kv_heads = k.size(1), groups = heads / kv_heads;
  const at::Tensor qg = GroupQueries(q.to(dt), kv_heads);
  const at::Tensor s = MaskedScores(qg, k.to(dt), mask, scale, groups);
  const at::Tensor lse = at::logsumexp(s, -1, /*keepdim=*/true);
  const at::Tensor p = at::exp(s - lse);
  const at::Tensor out = at::matmul(p, v.to(dt));
  return {UngroupQueries(out, heads), lse.squeeze(-1).reshape({q.size(0), heads, q.size(2)})};
}

BlockGrads MathBackward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                        const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                        BlockMask mask, double scale) {
  const at::ScalarType dt = MathDtype(q);
  const int64_t heads = q.size(1), kv_heads = k.size(1), groups = heads / kv_heads;
  const at::Tensor qg = GroupQueries(q.to(dt), kv_heads);
  const at::Tensor kd = k.to(dt), vd = v.to(dt);
  const at::Tensor dog = GroupQueries(dout.to(dt), kv_heads);
  const at::Tensor og = GroupQueries(out.to(dt), kv_heads);
  const at::Tensor lseg =
      lse.to(dt).reshape({q.size(0), kv_heads, groups * q.size(2), 1});
  const at::Tensor s = MaskedScores(qg, kd, mask, scale, groups);
  // Probabilities against the GLOBAL lse: this block's share of the softmax.
  const at::Tensor p = at::exp(s - lseg);
  const at::Tensor dv = at::matmul(p.transpose(-2, -1), dog);
  const at::Tensor dp = at::matmul(dog, vd.transpose(-2, -1));
  // D_i = sum_j dO_ij O_ij uses the final output, the same for every block.
  const at::Tensor delta = (dog * og).sum(-1, /*keepdim=*/true);
  const at::Tensor ds = p * (dp - delta);
  const at::Tensor dq = at::matmul(ds, kd) * scale;
  const at::Tensor dk = at::matmul(ds.transpose(-2, -1), qg) * scale;
  return {UngroupQueries(dq, heads).to(q.scalar_type()), dk.to(k.scalar_type()),
          dv.to(v.scalar_type())};
}

// Fused ops take equal head counts: expand K/V for GQA and sum the gradients
// back. (Transfers never carry the expanded tensors.)
at::Tensor ExpandKv(const at::Tensor& x, int64_t heads) {
  const int64_t kv = x.size(1);
  return kv == heads ? x : x.repeat_interleave(heads / kv, 1);
}

at::Tensor ReduceKvGrad(const at::Tensor& dx, int64_t kv_heads) {
  const int64_t heads = dx.size(1);
  if (heads == kv_heads) return dx;
  return dx.reshape({dx.size(0), kv_heads, heads / kv_heads, dx.size(2), dx.size(3)}).sum(2);
}

at::Tensor RngPlaceholder(const at::Tensor& q) {
  // Dropout is off, so the backward ops never read the philox state; they
  // still take tensors for it.
  return at::zeros({2}, q.options().dtype(at::kLong));
}

BlockOutput FusedForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         BlockMask mask, double scale, AttnBackend backend) {
  const bool causal = mask == BlockMask::kCausal;
  const at::Tensor ke = ExpandKv(k, q.size(1)), ve = ExpandKv(v, q.size(1));
  at::Tensor out, lse;
  if (backend == AttnBackend::kCudnn) {
    auto r = at::_scaled_dot_product_cudnn_attention(q, ke, ve, /*attn_bias=*/std::nullopt,
                                                     /*compute_log_sumexp=*/true, 0.0, causal,
                                                     false, scale);
    out = std::get<0>(r);
    lse = std::get<1>(r);
  } else {
    auto r = at::_scaled_dot_product_flash_attention(q, ke, ve, 0.0, causal, false, scale);
    out = std::get<0>(r);
    lse = std::get<1>(r);
  }
  // cuDNN reports the LSE as [B, H, Tq, 1]; flash as [B, H, Tq].
  lse = lse.reshape({q.size(0), q.size(1), q.size(2)}).to(at::kFloat);
  return {out, lse};
}

BlockGrads FusedBackward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                         const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                         BlockMask mask, double scale, AttnBackend backend) {
  const bool causal = mask == BlockMask::kCausal;
  const int64_t heads = q.size(1), kv_heads = k.size(1);
  const at::Tensor ke = ExpandKv(k, heads), ve = ExpandKv(v, heads);
  // cuDNN takes any strides (a block's rows narrowed out of a rank's
  // [B, H, T, D] tensors) and only re-lays dO out when its strides differ
  // from O's; copying every block's O and dO here cost a pass over both per
  // block. Flash wants them dense.
  const bool keep_layout = backend == AttnBackend::kCudnn &&
                           out.scalar_type() == q.scalar_type() &&
                           dout.scalar_type() == q.scalar_type() &&
                           out.strides() == dout.strides() && out.stride(-1) == 1;
  const at::Tensor o = keep_layout ? out : out.to(q.scalar_type()).contiguous();
  const at::Tensor g = keep_layout ? dout : dout.to(q.scalar_type()).contiguous();
  const at::Tensor rng = RngPlaceholder(q);
  const at::Tensor none;
  std::tuple<at::Tensor, at::Tensor, at::Tensor> r;
  if (backend == AttnBackend::kCudnn) {
    const at::Tensor l = lse.to(at::kFloat).contiguous().unsqueeze(-1);
    r = at::_scaled_dot_product_cudnn_attention_backward(g, q, ke, ve, o, l, rng, rng, none, none,
                                                         none, q.size(2), k.size(2), 0.0, causal,
                                                         scale);
  } else {
    const at::Tensor l = lse.to(at::kFloat).contiguous();
    r = at::_scaled_dot_product_flash_attention_backward(g, q, ke, ve, o, l, none, none, q.size(2),
                                                         k.size(2), 0.0, causal, rng, rng, scale);
  }
  return {std::get<0>(r), ReduceKvGrad(std::get<1>(r), kv_heads),
          ReduceKvGrad(std::get<2>(r), kv_heads)};
}

void CheckShapes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, BlockMask mask) {
  KP_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4);
  KP_CHECK(k.sizes() == v.sizes());
  KP_CHECK(q.size(0) == k.size(0) && q.size(3) == k.size(3));
  KP_CHECK(k.size(1) > 0 && q.size(1) % k.size(1) == 0);
  KP_CHECK(mask == BlockMask::kFull || q.size(2) == k.size(2));
}

}  // namespace

std::string AttnBackendName(AttnBackend backend) {
  switch (backend) {
    case AttnBackend::kAuto:
      return "auto";
    case AttnBackend::kMath:
      return "math";
    case AttnBackend::kFlash:
      return "flash";
    case AttnBackend::kCudnn:
      return "cudnn";
  }
  return "unknown";
}

AttnBackend ResolveBackend(AttnBackend requested, const at::Tensor& q) {
  if (!FusedCapable(q)) return AttnBackend::kMath;
  if (requested == AttnBackend::kAuto) return AttnBackend::kCudnn;
  return requested;
}

BlockOutput AttentionBlockForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  BlockMask mask, double scale, AttnBackend backend) {
  CheckShapes(q, k, v, mask);
  const AttnBackend b = ResolveBackend(backend, q);
  if (b == AttnBackend::kMath) return MathForward(q, k, v, mask, scale);
  return FusedForward(q, k, v, mask, scale, b);
}

BlockGrads AttentionBlockBackward(const at::Tensor& dout, const at::Tensor& q,
                                  const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                                  const at::Tensor& lse, BlockMask mask, double scale,
                                  AttnBackend backend) {
  CheckShapes(q, k, v, mask);
  const AttnBackend b = ResolveBackend(backend, q);
  if (b == AttnBackend::kMath) return MathBackward(dout, q, k, v, out, lse, mask, scale);
  return FusedBackward(dout, q, k, v, out, lse, mask, scale, b);
}

}  // namespace kp::parallel
