#include "runtime/engine/attention.h"

#include <cmath>
#include <optional>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "runtime/common/status.h"
#include "runtime/engine/log.h"

namespace kp::engine {
namespace {

class LocalAttention final : public Attention {
 public:
  explicit LocalAttention(bool prefer_cudnn) : cudnn_(prefer_cudnn) {}

  at::Tensor Forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionContext& context) override {
    KP_CHECK(context.layout == SequenceLayout::kWhole);
    KP_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4);
    const int64_t n_heads = q.size(1);
    // The fused GPU kernels differ in GQA support across versions; repeating
    // kv heads is correct on every backend (the cost is one copy of k and v).
    at::Tensor kk = RepeatKvHeads(k, n_heads);
    at::Tensor vv = RepeatKvHeads(v, n_heads);
    std::optional<double> scale;
    if (context.scale > 0) scale = context.scale;
    if (cudnn_ && q.is_cuda() && (q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf)) {
      // ATen's SDPA tries flash before cuDNN; cuDNN's fused attention ran
      // 1.65x faster than flash on an H200 (16 heads x 128, fwd + bwd).
      // The log-sum-exp is kept only when a backward will need it.
      const bool needs_grad = at::GradMode::is_enabled() &&
                              (q.requires_grad() || k.requires_grad() || v.requires_grad());
      try {
        return std::get<0>(at::_scaled_dot_product_cudnn_attention(
            q, kk, vv, /*attn_bias=*/std::nullopt, /*compute_log_sumexp=*/needs_grad,
            /*dropout_p=*/0.0, context.causal, /*return_debug_mask=*/false, scale));
      } catch (const std::exception& e) {
        cudnn_ = false;  // this shape or build: use ATen's choice from now on
        LogWarning(std::string("cuDNN attention unavailable, using ATen's SDPA choice: ") +
                   e.what());
      }
    }
    return at::scaled_dot_product_attention(q, kk, vv, /*attn_mask=*/std::nullopt,
                                            /*dropout_p=*/0.0, context.causal, scale);
  }

 private:
  bool cudnn_;
};

}  // namespace

at::Tensor RepeatKvHeads(const at::Tensor& kv, int64_t n_heads) {
  const int64_t n_kv = kv.size(1);
  KP_CHECK(n_heads % n_kv == 0);
  if (n_kv == n_heads) return kv;
  const int64_t rep = n_heads / n_kv;
  const int64_t b = kv.size(0), t = kv.size(2), d = kv.size(3);
  return kv.unsqueeze(2).expand({b, n_kv, rep, t, d}).reshape({b, n_heads, t, d});
}

std::unique_ptr<Attention> MakeLocalAttention(bool prefer_cudnn) {
  return std::make_unique<LocalAttention>(prefer_cudnn);
}

}  // namespace kp::engine
