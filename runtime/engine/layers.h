// The element-wise layers of a Llama block: RMSNorm, rotary position
// embedding (RoPE) and the SwiGLU activation. Each is a plain function of
// tensors (differentiable through autograd) so tests check it against float64.
#ifndef KP_RUNTIME_ENGINE_LAYERS_H_
#define KP_RUNTIME_ENGINE_LAYERS_H_

#include <cstdint>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "runtime/engine/linear.h"

namespace kp::engine {

// y = x / sqrt(mean(x^2, -1) + eps) * weight. The statistics are computed in
// at least fp32 (bf16 inputs are upcast); the result has `out_dtype`.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps,
                   at::ScalarType out_dtype);

class RMSNormLayer : public torch::nn::Module {
 public:
  RMSNormLayer(int64_t dim, double eps, const LinearContext& context);
  at::Tensor Forward(const at::Tensor& x) { return RmsNorm(x, weight_, eps_, compute_dtype_); }
  const at::Tensor& weight() const { return weight_; }

 private:
  at::Tensor weight_;
  double eps_;
  at::ScalarType compute_dtype_;
};

// cos/sin of position * theta^(-2i/Dh), i < Dh/2, each [T, Dh/2]. Positions
// are explicit (int64 [T]) because context-parallel shards hold
// non-contiguous positions. Angles are computed in float64, then cast.
struct RopeTable {
  at::Tensor cos;
  at::Tensor sin;
};
RopeTable MakeRopeTable(const at::Tensor& positions, int64_t head_dim, double theta,
                        at::ScalarType dtype);

// Rotates pairs (x[i], x[i + Dh/2]) of x: [B, H, T, Dh] (the "rotate half"
// convention of Llama/NeoX).
at::Tensor ApplyRope(const at::Tensor& x, const RopeTable& table);

// gate_up: [..., 2F] = [gate | up]; returns silu(gate) * up, [..., F].
at::Tensor SwiGlu(const at::Tensor& gate_up);

}  // namespace kp::engine

#endif  // KP_RUNTIME_ENGINE_LAYERS_H_
