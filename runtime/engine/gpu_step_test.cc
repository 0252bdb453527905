// One training step of a small model on CUDA (bf16 compute with fp32 master
// weights, and fp32) against the same step on CPU in float64. Skips without
// a GPU. Tolerances: bf16 has an 8-bit mantissa (relative rounding 2^-8 per
// op), so loss and gradients are checked to a few percent; fp32 (TF32 off)
// to 1e-3.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include "kernels/gpu_test_util.h"
#include "runtime/engine/model.h"
#include "runtime/engine/optimizer.h"

namespace kp::engine {
namespace {

ModelConfig SmallModel() {
  ModelConfig c;
  c.vocab_size = 64;
  c.d_model = 128;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_hidden = 256;
  c.max_seq_len = 64;
  return c;
}

struct StepOutput {
  double loss;
  std::vector<at::Tensor> grads;   // CPU float64
  std::vector<at::Tensor> deltas;  // parameter change of the optimizer step
};

double RelErr(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / (b.abs().max().item<double>() + 1e-30);
}

StepOutput OneStep(at::Device device, at::ScalarType compute, at::ScalarType param,
                   ActivationCheckpointing ac) {
  ModelConfig c = SmallModel();
  TrainingConfig t;
  t.lr = 1e-3;
  t.warmup_steps = 0;
  auto factory = MakeDenseLinearFactory();
  LinearContext ctx;
  ctx.device = device;
  ctx.param_dtype = param;
  ctx.compute_dtype = compute;
  ctx.generator = at::make_generator<at::CPUGeneratorImpl>(11);
  Transformer model(c, *factory, ctx, MakeLocalAttention(), ac);
  Optimizer opt(model, t);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(12);
  at::Tensor tok = at::randint(c.vocab_size, {2, 65}, g, at::kLong).to(device);
  at::Tensor loss = model.Loss(tok.narrow(1, 0, 64), tok.narrow(1, 1, 64),
                               WholeSequenceContext(64, device), /*chunk_tokens=*/48);
  loss.backward();
  StepOutput out;
  out.loss = loss.item<double>();
  std::vector<at::Tensor> before;
  for (const auto& p : opt.parameters()) {
    out.grads.push_back(p.grad().detach().to(at::kCPU, at::kDouble));
    before.push_back(p.detach().to(at::kCPU, at::kDouble));
  }
  opt.Step();
  for (size_t i = 0; i < before.size(); ++i) {
    out.deltas.push_back(opt.parameters()[i].detach().to(at::kCPU, at::kDouble) - before[i]);
  }
  return out;
}


// Adam's first step moves each weight by about lr * sign(grad): count the
// weights whose move differs from the reference by more than lr / 2 (a sign
// flip of a near-zero gradient; rare unless the gradients are wrong).
double FractionOfDifferentUpdates(const std::vector<at::Tensor>& a,
                                  const std::vector<at::Tensor>& b, double lr) {
  int64_t bad = 0, total = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    bad += ((a[i] - b[i]).abs() > lr / 2).sum().item<int64_t>();
    total += a[i].numel();
  }
  return static_cast<double>(bad) / static_cast<double>(total);
}

// The GPU attention (cuDNN first, in bf16) against the CPU math kernel in
// float64, forward and backward, with grouped-query heads.
TEST(GpuStepTest, AttentionMatchesCpuFloat64) {
  KP_SKIP_WITHOUT_GPU();
  const at::Device cuda(at::kCUDA, 0);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(21);
  at::Tensor q = at::randn({2, 8, 256, 128}, g, at::kDouble);
  at::Tensor k = at::randn({2, 2, 256, 128}, g, at::kDouble);
  at::Tensor v = at::randn({2, 2, 256, 128}, g, at::kDouble);
  at::Tensor proj = at::randn({2, 8, 256, 128}, g, at::kDouble);
  AttentionContext ctx;
  auto run = [&](Attention& a, at::Device dev, at::ScalarType dtype) {
    std::vector<at::Tensor> in;
    for (const auto& t : {q, k, v}) in.push_back(t.to(dev, dtype).requires_grad_(true));
    at::Tensor out = a.Forward(in[0], in[1], in[2], ctx);
    (out.to(at::kDouble) * proj.to(dev)).sum().backward();
    std::vector<at::Tensor> res{out.detach().to(at::kCPU, at::kDouble)};
    for (const auto& t : in) res.push_back(t.grad().to(at::kCPU, at::kDouble));
    return res;
  };
  auto ref = run(*MakeLocalAttention(), at::kCPU, at::kDouble);
  for (bool cudnn : {true, false}) {
    auto got = run(*MakeLocalAttention(cudnn), cuda, at::kBFloat16);
    for (size_t i = 0; i < ref.size(); ++i) {
      EXPECT_LT(RelErr(got[i], ref[i]), 3e-2) << "cudnn " << cudnn << " tensor " << i;
    }
  }
}

TEST(GpuStepTest, CudaStepMatchesCpuFloat64) {
  KP_SKIP_WITHOUT_GPU();
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
  const at::Device cuda(at::kCUDA, 0);
  StepOutput ref = OneStep(at::kCPU, at::kDouble, at::kDouble, ActivationCheckpointing::kNone);

  StepOutput fp32 = OneStep(cuda, at::kFloat, at::kFloat, ActivationCheckpointing::kNone);
  EXPECT_NEAR(fp32.loss, ref.loss, 1e-4 * ref.loss);
  for (size_t i = 0; i < ref.grads.size(); ++i) EXPECT_LT(RelErr(fp32.grads[i], ref.grads[i]), 1e-3) << i;
  EXPECT_LT(FractionOfDifferentUpdates(fp32.deltas, ref.deltas, 1e-3), 1e-3);

  for (auto ac : {ActivationCheckpointing::kNone, ActivationCheckpointing::kFull}) {
    StepOutput bf16 = OneStep(cuda, at::kBFloat16, at::kFloat, ac);
    EXPECT_NEAR(bf16.loss, ref.loss, 2e-2 * ref.loss);
    for (size_t i = 0; i < ref.grads.size(); ++i) {
      EXPECT_LT(RelErr(bf16.grads[i], ref.grads[i]), 8e-2) << i;
    }
    EXPECT_LT(FractionOfDifferentUpdates(bf16.deltas, ref.deltas, 1e-3), 5e-2);
  }
}

}  // namespace
}  // namespace kp::engine
