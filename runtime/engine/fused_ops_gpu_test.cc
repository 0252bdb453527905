// The fused RoPE and SwiGLU autograd functions on the GPU (skips elsewhere):
// outputs and input gradients against float64 (the ATen composition in
// double on the same bf16-rounded inputs) and against the bf16 composition;
// the model's loss and gradients with fused kernels on vs off; fused vs
// composition timings at the 1.3B model's sizes (printed).
//
// Tolerances (max-abs error relative to the reference's max-abs, RelErr):
// the fused kernels round each output to bf16 once (2^-9 relative), so 1e-2
// against float64 and 2e-2 against the bf16 composition (which itself rounds
// 2-4 times, with a bf16 RoPE table). The model test uses gpu_step_test's
// bf16 bounds (loss 2e-2, each gradient 8e-2 against float64: two blocks of
// bf16 GEMMs and attention), and asks the fused model's worst gradient error
// to stay within 1.5x the unfused model's + 1e-2.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAFunctions.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "kernels/gpu_test_util.h"
#include "runtime/engine/fused_ops.h"
#include "runtime/engine/model.h"
#include "runtime/engine/test_util.h"

namespace kp::engine {
namespace {

using testing::RelErr;

#define KP_SKIP_WITHOUT_FUSED_KERNELS()                                            \
  do {                                                                             \
    KP_SKIP_WITHOUT_GPU();                                                         \
    if (!FusedKernelsApply(at::Device(at::kCUDA, 0), at::kBFloat16)) {             \
      GTEST_SKIP() << "the fused kernels are built for sm_90+; this GPU is older"; \
    }                                                                              \
  } while (0)

const at::Device kCuda(at::kCUDA, 0);

at::Tensor Grad(const std::vector<at::Tensor>& outputs, const at::Tensor& input,
                const std::vector<at::Tensor>& grad_outputs) {
  return torch::autograd::grad(outputs, {input}, grad_outputs)[0];
}

struct RopeCase {
  int64_t b, t, h, hkv, dh;
  bool strided_grads;  // dq/dk/dv as transposed views of [B, T, heads, Dh]
};

std::string Name(const RopeCase& c) {
  return "B" + std::to_string(c.b) + " T" + std::to_string(c.t) + " H" + std::to_string(c.h) +
         " Hkv" + std::to_string(c.hkv) + " Dh" + std::to_string(c.dh) +
         (c.strided_grads ? " strided grads" : "");
}

// A random bf16 gradient of shape [B, heads, T, Dh], laid out contiguously
// or as the transpose of a [B, T, heads, Dh] buffer.
at::Tensor HeadGrad(const RopeCase& c, int64_t heads, at::Generator& gen) {
  if (c.strided_grads) {
    return at::randn({c.b, c.t, heads, c.dh}, gen, at::kFloat)
        .to(kCuda, at::kBFloat16)
        .transpose(1, 2);
  }
  return at::randn({c.b, heads, c.t, c.dh}, gen, at::kFloat).to(kCuda, at::kBFloat16);
}

TEST(FusedRopeGpu, MatchesFloat64AndTheComposition) {
  KP_SKIP_WITHOUT_FUSED_KERNELS();
  const std::vector<RopeCase> cases = {
      {2, 37, 4, 2, 64, false}, {3, 5, 3, 1, 128, true}, {1, 9, 2, 2, 6, false},
      {2, 17, 6, 3, 80, true},  {1, 64, 16, 16, 128, false}, {2, 33, 8, 8, 128, true}};
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  for (const RopeCase& c : cases) {
    SCOPED_TRACE(Name(c));
    const int64_t width = (c.h + 2 * c.hkv) * c.dh;
    const at::Tensor qkv = at::randn({c.b, c.t, width}, gen, at::kFloat).to(kCuda, at::kBFloat16);
    const at::Tensor positions =
        (at::arange(c.t, at::TensorOptions().dtype(at::kLong)) * 2 + 7).to(kCuda);
    const at::Tensor gq = HeadGrad(c, c.h, gen), gk = HeadGrad(c, c.hkv, gen),
                     gv = HeadGrad(c, c.hkv, gen);

    at::Tensor x64 = qkv.to(at::kDouble).requires_grad_(true);
    QkvHeads want = SplitQkvWithRopeReference(
        x64, MakeRopeTable(positions, c.dh, 1e4, at::kDouble), c.h, c.hkv);
    const at::Tensor want_grad = Grad({want.q, want.k, want.v}, x64,
                                      {gq.to(at::kDouble), gk.to(at::kDouble), gv.to(at::kDouble)});

    at::Tensor xf = qkv.detach().requires_grad_(true);
    QkvHeads fused = SplitQkvWithRope(
        xf, MakeRopeTable(positions, c.dh, 1e4, RopeTableDtype(true, kCuda, at::kBFloat16)), c.h,
        c.hkv, /*fused=*/true);
    // Stored as [B, T, heads, Dh]: the transposed view is contiguous.
    EXPECT_TRUE(fused.q.transpose(1, 2).is_contiguous() && fused.k.transpose(1, 2).is_contiguous() &&
                fused.v.transpose(1, 2).is_contiguous());
    EXPECT_EQ(fused.q.scalar_type(), at::kBFloat16);
    const at::Tensor fused_grad = Grad({fused.q, fused.k, fused.v}, xf, {gq, gk, gv});

    at::Tensor xc = qkv.detach().requires_grad_(true);
    QkvHeads comp = SplitQkvWithRope(xc, MakeRopeTable(positions, c.dh, 1e4, at::kBFloat16), c.h,
                                     c.hkv, /*fused=*/false);
    const at::Tensor comp_grad = Grad({comp.q, comp.k, comp.v}, xc, {gq, gk, gv});

    EXPECT_LT(RelErr(fused.q, want.q), 1e-2);
    EXPECT_LT(RelErr(fused.k, want.k), 1e-2);
    EXPECT_TRUE(at::equal(fused.v, comp.v));  // v is a bit-exact copy
    EXPECT_LT(RelErr(fused_grad, want_grad), 1e-2);
    EXPECT_LT(RelErr(fused.q, comp.q), 2e-2);
    EXPECT_LT(RelErr(fused.k, comp.k), 2e-2);
    EXPECT_LT(RelErr(fused_grad, comp_grad), 2e-2);
    std::printf("[rope %s] vs float64: fused q %.2e k %.2e grad %.2e; composition q %.2e grad %.2e\n",
                Name(c).c_str(), RelErr(fused.q, want.q), RelErr(fused.k, want.k),
                RelErr(fused_grad, want_grad), RelErr(comp.q, want.q),
                RelErr(comp_grad, want_grad));
  }
}

TEST(FusedSwiGluGpu, MatchesFloat64AndTheComposition) {
  KP_SKIP_WITHOUT_FUSED_KERNELS();
  struct Case {
    std::vector<int64_t> lead;  // leading dims
    int64_t f;                  // ffn width
    int64_t pad;                // extra columns: gate_up is a slice of a wider tensor
  };
  const std::vector<Case> cases = {{{3, 37}, 64, 0}, {{2, 5}, 13, 0}, {{4, 129}, 704, 0},
                                   {{7}, 64, 8},     {{5}, 24, 3}};
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  for (const Case& c : cases) {
    SCOPED_TRACE("F " + std::to_string(c.f) + " pad " + std::to_string(c.pad));
    std::vector<int64_t> wide = c.lead, out_sizes = c.lead;
    wide.push_back(2 * c.f + c.pad);
    out_sizes.push_back(c.f);
    const at::Tensor base = (at::randn(wide, gen, at::kFloat) * 3).to(kCuda, at::kBFloat16);
    const at::Tensor gout = at::randn(out_sizes, gen, at::kFloat).to(kCuda, at::kBFloat16);

    at::Tensor b64 = base.to(at::kDouble).requires_grad_(true);
    at::Tensor want = SwiGlu(b64.narrow(-1, 0, 2 * c.f));
    const at::Tensor want_grad = Grad({want}, b64, {gout.to(at::kDouble)});

    at::Tensor bf = base.detach().requires_grad_(true);
    at::Tensor fused = SwiGluActivation(bf.narrow(-1, 0, 2 * c.f), /*fused=*/true);
    ASSERT_EQ(fused.sizes(), want.sizes());
    const at::Tensor fused_grad = Grad({fused}, bf, {gout});

    at::Tensor bc = base.detach().requires_grad_(true);
    at::Tensor comp = SwiGluActivation(bc.narrow(-1, 0, 2 * c.f), /*fused=*/false);
    const at::Tensor comp_grad = Grad({comp}, bc, {gout});

    EXPECT_LT(RelErr(fused, want), 1e-2);
    EXPECT_LT(RelErr(fused_grad, want_grad), 1e-2);
    EXPECT_LT(RelErr(fused, comp), 2e-2);
    EXPECT_LT(RelErr(fused_grad, comp_grad), 2e-2);
    std::printf("[swiglu F%ld] vs float64: fused out %.2e grad %.2e; composition out %.2e grad %.2e\n",
                static_cast<long>(c.f), RelErr(fused, want), RelErr(fused_grad, want_grad),
                RelErr(comp, want), RelErr(comp_grad, want_grad));
  }
}

ModelConfig SmallModel(bool fused) {
  ModelConfig c;
  c.vocab_size = 64;
  c.d_model = 128;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_hidden = 256;
  c.max_seq_len = 64;
  c.fused_kernels = fused;
  return c;
}

struct ModelRun {
  double loss = 0;
  std::vector<at::Tensor> grads;  // CPU float64, in parameter order
};

ModelRun LossAndGrads(bool fused, at::Device device, at::ScalarType compute,
                      at::ScalarType param, ActivationCheckpointing ac) {
  auto factory = MakeDenseLinearFactory();
  LinearContext ctx;
  ctx.device = device;
  ctx.param_dtype = param;
  ctx.compute_dtype = compute;
  ctx.generator = at::make_generator<at::CPUGeneratorImpl>(11);  // same weights everywhere
  Transformer model(SmallModel(fused), *factory, ctx, MakeLocalAttention(), ac);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(12);
  at::Tensor tok = at::randint(64, {2, 65}, g, at::kLong).to(device);
  at::Tensor loss = model.Loss(tok.narrow(1, 0, 64), tok.narrow(1, 1, 64),
                               WholeSequenceContext(64, device), /*chunk_tokens=*/48);
  loss.backward();
  ModelRun out;
  out.loss = loss.item<double>();
  for (const auto& p : model.parameters()) {
    out.grads.push_back(p.grad().detach().to(at::kCPU, at::kDouble));
  }
  return out;
}

TEST(FusedModelGpu, FusedOnMatchesFusedOffAndFloat64) {
  KP_SKIP_WITHOUT_FUSED_KERNELS();
  const ModelRun truth =
      LossAndGrads(false, at::kCPU, at::kDouble, at::kDouble, ActivationCheckpointing::kNone);
  const ModelRun off =
      LossAndGrads(false, kCuda, at::kBFloat16, at::kFloat, ActivationCheckpointing::kNone);
  const ModelRun on =
      LossAndGrads(true, kCuda, at::kBFloat16, at::kFloat, ActivationCheckpointing::kNone);
  // Full checkpointing runs the fused functions again inside the recompute.
  const ModelRun on_full =
      LossAndGrads(true, kCuda, at::kBFloat16, at::kFloat, ActivationCheckpointing::kFull);
  EXPECT_NEAR(on.loss, truth.loss, 2e-2 * truth.loss);
  EXPECT_NEAR(on.loss, off.loss, 2e-2 * off.loss);
  EXPECT_NEAR(on_full.loss, on.loss, 1e-2 * on.loss);
  ASSERT_EQ(on.grads.size(), truth.grads.size());
  double worst_on = 0, worst_off = 0;
  for (size_t i = 0; i < on.grads.size(); ++i) {
    SCOPED_TRACE("parameter " + std::to_string(i));
    const double e_on = RelErr(on.grads[i], truth.grads[i]);
    const double e_off = RelErr(off.grads[i], truth.grads[i]);
    worst_on = std::max(worst_on, e_on);
    worst_off = std::max(worst_off, e_off);
    EXPECT_LT(e_on, 8e-2);
    EXPECT_LT(RelErr(on.grads[i], off.grads[i]), 8e-2);
    EXPECT_LT(RelErr(on_full.grads[i], on.grads[i]), 5e-2);
  }
  EXPECT_LT(worst_on, 1.5 * worst_off + 1e-2);
  std::printf("[model] loss float64 %.6f fused %.6f unfused %.6f; worst gradient error vs "
              "float64: fused %.2e unfused %.2e\n",
              truth.loss, on.loss, off.loss, worst_on, worst_off);
}

// Milliseconds per call of fn, averaged over iters after warm-up.
template <typename Fn>
double TimeMs(Fn&& fn, int iters = 20) {
  for (int i = 0; i < 3; ++i) fn();
  c10::cuda::device_synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) fn();
  c10::cuda::device_synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
             .count() /
         iters;
}

TEST(FusedOpsGpu, TimingsAgainstTheComposition) {
  KP_SKIP_WITHOUT_FUSED_KERNELS();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  {
    // RoPE + head split at the 1.3B model's attention input, forward + backward.
    const int64_t b = 4, t = 4096, h = 16, dh = 128, width = 3 * h * dh;
    const at::Tensor qkv = at::randn({b, t, width}, gen, at::kFloat).to(kCuda, at::kBFloat16);
    const at::Tensor g = at::randn({3, b, h, t, dh}, gen, at::kFloat).to(kCuda, at::kBFloat16);
    const at::Tensor positions = at::arange(t, at::TensorOptions().dtype(at::kLong).device(kCuda));
    const RopeTable t32 = MakeRopeTable(positions, dh, 1e4, at::kFloat);
    const RopeTable t16 = MakeRopeTable(positions, dh, 1e4, at::kBFloat16);
    at::Tensor last_fused, last_comp;
    auto run = [&](bool fused, at::Tensor* grad_out) {
      at::Tensor x = qkv.detach().requires_grad_(true);
      QkvHeads o = SplitQkvWithRope(x, fused ? t32 : t16, h, h, fused);
      *grad_out = Grad({o.q, o.k, o.v}, x, {g[0], g[1], g[2]});
    };
    const double fused_ms = TimeMs([&] { run(true, &last_fused); });
    const double comp_ms = TimeMs([&] { run(false, &last_comp); });
    // Each way: bf16 [B, T, 3 H Dh] read once and written once.
    const double bytes = 2.0 * 2 * qkv.numel() * 2;
    std::printf("[timing] rope+split fwd+bwd B4 T4096 H16 Dh128: fused %.3f ms (%.0f GB/s), "
                "composition %.3f ms, speedup %.2fx\n",
                fused_ms, bytes / fused_ms / 1e6, comp_ms, comp_ms / fused_ms);
    EXPECT_LT(RelErr(last_fused, last_comp), 2e-2);
  }
  {
    // SwiGLU at 16384 tokens x ffn_hidden 5632, forward + backward.
    const int64_t n = 16384, f = 5632;
    const at::Tensor gu = (at::randn({n, 2 * f}, gen, at::kFloat) * 3).to(kCuda, at::kBFloat16);
    const at::Tensor gout = at::randn({n, f}, gen, at::kFloat).to(kCuda, at::kBFloat16);
    at::Tensor last_fused, last_comp;
    auto run = [&](bool fused, at::Tensor* grad_out) {
      at::Tensor x = gu.detach().requires_grad_(true);
      *grad_out = Grad({SwiGluActivation(x, fused)}, x, {gout});
    };
    const double fused_ms = TimeMs([&] { run(true, &last_fused); });
    const double comp_ms = TimeMs([&] { run(false, &last_comp); });
    // forward reads 2F and writes F per row; backward reads 3F, writes 2F.
    const double bytes = static_cast<double>(n) * f * 8 * 2;
    std::printf("[timing] swiglu fwd+bwd 16384x5632: fused %.3f ms (%.0f GB/s), composition "
                "%.3f ms, speedup %.2fx\n",
                fused_ms, bytes / fused_ms / 1e6, comp_ms, comp_ms / fused_ms);
    EXPECT_LT(RelErr(last_fused, last_comp), 2e-2);
  }
}

}  // namespace
}  // namespace kp::engine
