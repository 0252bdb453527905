// Training steps of a small model on CUDA (bf16 compute with fp32 master
// weights, and fp32) against the same steps on CPU in float64: three steps
// with the optimizer (the CUDA run takes the fused AdamW kernel, the CPU run
// torch::optim::AdamW), so a wrong update shows in the next step's loss and in
// the weights. Skips without a GPU. Tolerances: bf16 has an 8-bit mantissa
// (relative rounding 2^-8 per op), so losses and gradients are checked to a
// few percent; fp32 (TF32 off) to 1e-3.
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

constexpr int kSteps = 3;
constexpr double kLr = 1e-3;

struct RunOutput {
  std::vector<double> losses;      // one per step, before its update
  std::vector<at::Tensor> grads;   // CPU float64, of the first step
  std::vector<at::Tensor> deltas;  // CPU float64, weights after kSteps - before
};

double RelErr(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / (b.abs().max().item<double>() + 1e-30);
}

// kSteps steps as the training loop takes them: zero the gradients, loss on
// a fresh batch, backward, global-norm clipping, optimizer step (at a
// learning rate that changes every step).
RunOutput Train(at::Device device, at::ScalarType compute, at::ScalarType param,
                ActivationCheckpointing ac) {
  ModelConfig c = SmallModel();
  TrainingConfig t;
  t.lr = kLr;
  t.warmup_steps = 0;
  t.grad_clip = 1.0;
  auto factory = MakeDenseLinearFactory();
  LinearContext ctx;
  ctx.device = device;
  ctx.param_dtype = param;
  ctx.compute_dtype = compute;
  ctx.generator = at::make_generator<at::CPUGeneratorImpl>(11);
  Transformer model(c, *factory, ctx, MakeLocalAttention(), ac);
  Optimizer opt(model, t);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(12);
  RunOutput out;
  // Snapshots are clones: for CPU float64 to() returns the tensor itself,
  // which the optimizer (and the clipping) then change in place.
  std::vector<at::Tensor> before;
  for (const auto& p : opt.parameters()) {
    before.push_back(p.detach().to(at::kCPU, at::kDouble).clone());
  }
  for (int step = 0; step < kSteps; ++step) {
    opt.ZeroGrad();
    at::Tensor tok = at::randint(c.vocab_size, {2, 65}, g, at::kLong).to(device);
    at::Tensor loss = model.Loss(tok.narrow(1, 0, 64), tok.narrow(1, 1, 64),
                                 WholeSequenceContext(64, device), /*chunk_tokens=*/48);
    loss.backward();
    out.losses.push_back(loss.item<double>());
    if (step == 0) {
      for (const auto& p : opt.parameters()) {
        out.grads.push_back(p.grad().detach().to(at::kCPU, at::kDouble).clone());
      }
    }
    at::Tensor norm = GlobalGradNorm(opt.parameters());
    const double n = norm.item<double>();
    if (n > t.grad_clip) {
      ScaleGradients(opt.parameters(), at::scalar_tensor(t.grad_clip / (n + 1e-6), norm.options()));
    }
    opt.SetLearningRate(kLr * (1.0 - 0.25 * step));
    opt.Step();
  }
  for (size_t i = 0; i < before.size(); ++i) {
    out.deltas.push_back(opt.parameters()[i].detach().to(at::kCPU, at::kDouble) - before[i]);
  }
  return out;
}

// Adam moves each weight by about lr * sign(grad) per step: count the
// weights whose total move differs from the reference by more than lr / 2 (a
// sign flip of a near-zero gradient; rare unless the update is wrong). A
// non-finite move counts as different.
double FractionOfDifferentUpdates(const std::vector<at::Tensor>& a,
                                  const std::vector<at::Tensor>& b, double lr) {
  int64_t bad = 0, total = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    bad += at::logical_not((a[i] - b[i]).abs() <= lr / 2).sum().item<int64_t>();
    total += a[i].numel();
  }
  return static_cast<double>(bad) / static_cast<double>(total);
}

bool AllFinite(const std::vector<at::Tensor>& ts) {
  for (const auto& t : ts) {
    if (!at::isfinite(t).all().item<bool>()) return false;
  }
  return true;
}

// Same checks for every precision; loss_tol and grad_tol relative.
void ExpectMatches(const RunOutput& got, const RunOutput& ref, double loss_tol, double grad_tol,
                   double update_tol, const std::string& what) {
  ASSERT_EQ(got.losses.size(), ref.losses.size());
  for (size_t s = 0; s < ref.losses.size(); ++s) {
    EXPECT_NEAR(got.losses[s], ref.losses[s], loss_tol * ref.losses[s]) << what << " step " << s;
  }
  for (size_t i = 0; i < ref.grads.size(); ++i) {
    EXPECT_LT(RelErr(got.grads[i], ref.grads[i]), grad_tol) << what << " grad " << i;
  }
  EXPECT_TRUE(AllFinite(got.deltas)) << what << ": non-finite weights after the updates";
  EXPECT_LT(FractionOfDifferentUpdates(got.deltas, ref.deltas, kLr), update_tol) << what;
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
    // Leaves on every device: to() on CPU/float64 returns the tensor itself,
    // so without detach() the first run would make q, k, v require grad and
    // the CUDA copies would be non-leaves without a .grad.
    for (const auto& t : {q, k, v}) in.push_back(t.to(dev, dtype).detach().requires_grad_(true));
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
  RunOutput ref = Train(at::kCPU, at::kDouble, at::kDouble, ActivationCheckpointing::kNone);
  ASSERT_TRUE(AllFinite(ref.deltas));

  RunOutput fp32 = Train(cuda, at::kFloat, at::kFloat, ActivationCheckpointing::kNone);
  ExpectMatches(fp32, ref, 1e-4, 1e-3, 1e-3, "fp32");

  for (auto ac : {ActivationCheckpointing::kNone, ActivationCheckpointing::kFull}) {
    RunOutput bf16 = Train(cuda, at::kBFloat16, at::kFloat, ac);
    ExpectMatches(bf16, ref, 2e-2, 8e-2, 5e-2,
                  ac == ActivationCheckpointing::kNone ? "bf16" : "bf16 checkpointed");
  }
}

}  // namespace
}  // namespace kp::engine
