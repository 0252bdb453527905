#include "runtime/engine/layers.h"

#include <ATen/ATen.h>

namespace kp::engine {

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps,
                   at::ScalarType out_dtype) {
  if (x.is_cuda() && x.scalar_type() == out_dtype) {
    // ATen's fused CUDA kernel (statistics in fp32 inside): one launch
    // forward and one backward instead of six element-wise passes.
    return at::rms_norm(x, {x.size(-1)}, weight.to(out_dtype), eps);
  }
  const at::ScalarType stat_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor xf = x.to(stat_dtype);
  at::Tensor inv = at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (xf * inv * weight.to(stat_dtype)).to(out_dtype);
}

RMSNormLayer::RMSNormLayer(int64_t dim, double eps, const LinearContext& context)
    : eps_(eps), compute_dtype_(context.compute_dtype) {
  weight_ = register_parameter(
      "weight", at::ones({dim}, at::TensorOptions().dtype(context.param_dtype).device(context.device)));
}

RopeTable MakeRopeTable(const at::Tensor& positions, int64_t head_dim, double theta,
                        at::ScalarType dtype) {
  auto opts = at::TensorOptions().dtype(at::kDouble).device(positions.device());
  at::Tensor i = at::arange(0, head_dim / 2, opts);
  at::Tensor inv_freq = at::pow(theta, i * (-2.0 / static_cast<double>(head_dim)));
  at::Tensor angles = positions.to(at::kDouble).unsqueeze(1) * inv_freq.unsqueeze(0);
  return RopeTable{angles.cos().to(dtype), angles.sin().to(dtype)};
}

at::Tensor ApplyRope(const at::Tensor& x, const RopeTable& table) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor x1 = x.narrow(-1, 0, half);
  at::Tensor x2 = x.narrow(-1, half, half);
  const at::Tensor& c = table.cos;  // [T, half] broadcasts over [B, H, T, half]
  const at::Tensor& s = table.sin;
  return at::cat({x1 * c - x2 * s, x2 * c + x1 * s}, -1);
}

at::Tensor SwiGlu(const at::Tensor& gate_up) {
  auto parts = gate_up.chunk(2, -1);
  return at::silu(parts[0]) * parts[1];
}

}  // namespace kp::engine
