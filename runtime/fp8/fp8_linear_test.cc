// The FP8 Linear on CPU through the emulation path (reference casts, ATen's
// CPU _scaled_mm): the same casts, scales and GEMM wiring as on the GPU.
#include "runtime/fp8/fp8_linear.h"

#include <cmath>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "kernels/fp8_math.h"
#include "runtime/fp8/cast.h"

namespace kp::fp8 {
namespace {

using kernels::Fp8Format;

engine::LinearContext CpuContext(uint64_t seed) {
  engine::LinearContext c;
  c.device = at::kCPU;
  c.param_dtype = at::kFloat;
  c.compute_dtype = at::kFloat;
  c.generator = at::detail::createCPUGenerator(seed);
  return c;
}

Fp8Options Emulated(Fp8Recipe recipe) {
  Fp8Options o;
  o.recipe = recipe;
  o.amax_history_len = 4;
  o.allow_cpu_emulation = true;
  return o;
}

std::shared_ptr<Fp8Session> Session(const Fp8Options& o) {
  auto s = Fp8Session::Create(o, CpuDevice());
  KP_CHECK(s.ok());
  return *s;
}

engine::LinearSpec Spec(const std::string& name, int64_t in, int64_t out) {
  engine::LinearSpec s;
  s.name = name;
  s.in_features = in;
  s.out_features = out;
  return s;
}

// Independent of CastToFp8: element by element through the scalar reference.
// Returns the dequantised tensor x_q = decode(encode(x * scale)) / scale.
at::Tensor QuantDequant(const at::Tensor& x, Fp8Format f, float scale) {
  at::Tensor xf = x.detach().to(at::kFloat).contiguous();
  at::Tensor out = at::empty_like(xf);
  const float* in = xf.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t i = 0; i < xf.numel(); ++i) {
    o[i] = kernels::Fp8DecodeReference(kernels::Fp8EncodeReference(in[i] * scale, f), f) / scale;
  }
  return out.to(at::kDouble);
}

float CurrentScale(const at::Tensor& x, Fp8Format f) {
  return kernels::Fp8ScaleFromAmax(x.detach().abs().max().item<float>(), kernels::Fp8MaxFinite(f), 0, 1.0f);
}

// ||a - b||_F / ||b||_F
double RelFro(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor bd = b.detach().to(at::kDouble);
  return (a.detach().to(at::kDouble) - bd).norm().item<double>() / bd.norm().item<double>();
}

TEST(Fp8Session, FactoryPicksFp8OnlyWhereItApplies) {
  auto session = Session(Emulated(Fp8Recipe::kDelayed));
  engine::LinearRegistry registry = engine::DefaultLinearRegistry();
  RegisterFp8Linear(registry, session);
  auto factory = registry.Make("fp8");
  ASSERT_TRUE(factory.ok());
  engine::LinearContext ctx = CpuContext(1);
  auto qkv = (*factory)->Create(Spec("blocks.0.attn.qkv", 64, 192), ctx);
  auto head = (*factory)->Create(Spec("lm_head", 64, 256), ctx);
  auto odd = (*factory)->Create(Spec("blocks.0.mlp.down", 100, 64), ctx);
  engine::LinearSpec biased = Spec("blocks.0.attn.out", 64, 64);
  biased.bias = true;
  auto with_bias = (*factory)->Create(biased, ctx);
  EXPECT_NE(std::dynamic_pointer_cast<Fp8Linear>(qkv), nullptr);
  EXPECT_EQ(std::dynamic_pointer_cast<Fp8Linear>(head), nullptr);
  EXPECT_EQ(std::dynamic_pointer_cast<Fp8Linear>(odd), nullptr);
  EXPECT_EQ(std::dynamic_pointer_cast<Fp8Linear>(with_bias), nullptr);
  const auto choices = session->choices();
  ASSERT_EQ(choices.size(), 4u);
  EXPECT_TRUE(choices[0].second.fp8);
  EXPECT_NE(choices[1].second.reason.find("LM head"), std::string::npos);
  EXPECT_NE(choices[2].second.reason.find("multiples of 16"), std::string::npos);
  EXPECT_EQ(session->fp8_layers().size(), 1u);

  Fp8Options with_head = Emulated(Fp8Recipe::kDelayed);
  with_head.fp8_lm_head = true;
  auto s2 = Session(with_head);
  EXPECT_NE(std::dynamic_pointer_cast<Fp8Linear>(s2->Create(Spec("lm_head", 64, 256), ctx)), nullptr);
}

TEST(Fp8Session, UnsupportedDeviceFailsOrFallsBackToDense) {
  Fp8Options o;
  auto strict = Fp8Session::Create(o, CpuDevice());
  ASSERT_FALSE(strict.ok());
  EXPECT_NE(strict.status().message().find("CUDA GPU"), std::string::npos);
  o.allow_fallback = true;
  auto lenient = Fp8Session::Create(o, CpuDevice());
  ASSERT_TRUE(lenient.ok());
  EXPECT_FALSE((*lenient)->fp8_enabled());
  engine::LinearContext ctx = CpuContext(1);
  auto layer = (*lenient)->Create(Spec("blocks.0.attn.qkv", 64, 192), ctx);
  EXPECT_EQ(std::dynamic_pointer_cast<Fp8Linear>(layer), nullptr);
  EXPECT_NE((*lenient)->choices()[0].second.reason.find("fallback"), std::string::npos);
}

// Forward and both backward GEMMs equal the float64 product of the
// dequantised operands (so scales and layouts are wired right), and land
// within FP8 tolerance of the unquantised fp32 layer on Gaussian data.
TEST(Fp8Linear, CurrentScalingForwardBackwardMatchReferences) {
  auto session = Session(Emulated(Fp8Recipe::kCurrent));
  engine::LinearContext ctx = CpuContext(5);
  auto layer = std::dynamic_pointer_cast<Fp8Linear>(session->Create(Spec("blocks.1.mlp.gate_up", 128, 96), ctx));
  ASSERT_NE(layer, nullptr);
  at::manual_seed(11);
  const at::Tensor x = at::randn({4, 16, 128}).requires_grad_(true);  // 64 tokens
  const at::Tensor gy = at::randn({4, 16, 96});
  const at::Tensor y = layer->Forward(x);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{4, 16, 96}));
  const auto grads = torch::autograd::grad({y}, {x, layer->weight()}, {gy});
  const at::Tensor w = layer->weight().detach();
  const at::Tensor x2 = x.detach().reshape({64, 128});
  const at::Tensor g2 = gy.reshape({64, 96});

  const at::Tensor xq = QuantDequant(x2, Fp8Format::kE4M3, CurrentScale(x2, Fp8Format::kE4M3));
  const at::Tensor wq = QuantDequant(w, Fp8Format::kE4M3, CurrentScale(w, Fp8Format::kE4M3));
  const at::Tensor gq = QuantDequant(g2, Fp8Format::kE5M2, CurrentScale(g2, Fp8Format::kE5M2));
  EXPECT_LT(RelFro(y.reshape({64, 96}), xq.matmul(wq.t())), 1e-5);
  EXPECT_LT(RelFro(grads[0].reshape({64, 128}), gq.matmul(wq)), 1e-5);
  EXPECT_LT(RelFro(grads[1], gq.t().matmul(xq)), 1e-5);

  // FP8 tolerance against the fp32 layer. Expected sizes for Gaussian data:
  // E4M3's relative rounding error is ~2.5% RMS per operand, so about 3.5% for
  // a product of two; E5M2's is ~5%, so ~6% for the gradients.
  const double fwd = RelFro(y, at::matmul(x.detach(), w.t()));
  const double dx = RelFro(grads[0], at::matmul(gy, w));
  const double dw = RelFro(grads[1], g2.t().matmul(x2));
  EXPECT_LT(fwd, 5e-2);
  EXPECT_GT(fwd, 1e-3);  // it really was quantised
  EXPECT_LT(dx, 1e-1);
  EXPECT_LT(dw, 1e-1);
  RecordProperty("rel_fro_forward", std::to_string(fwd));
  RecordProperty("rel_fro_dx", std::to_string(dx));
  RecordProperty("rel_fro_dw", std::to_string(dw));
}

TEST(Fp8Linear, DelayedScalesUpdateOnceAStepFromTheHistory) {
  auto session = Session(Emulated(Fp8Recipe::kDelayed));
  engine::LinearContext ctx = CpuContext(6);
  auto layer = std::dynamic_pointer_cast<Fp8Linear>(session->Create(Spec("blocks.2.attn.out", 64, 32), ctx));
  ASSERT_NE(layer, nullptr);
  Fp8LayerState& st = layer->state();
  at::manual_seed(12);
  const at::Tensor w = layer->weight().detach();
  float x_amax_seen = 0, g_amax_seen = 0;
  for (int step = 0; step < 6; ++step) {
    // The range moves from step to step; delayed scaling follows the max
    // over the last 4 steps.
    const float spread = step == 1 ? 40.0f : 1.0f + 0.25f * step;
    const at::Tensor x = (at::randn({32, 64}) * spread).requires_grad_(true);
    const at::Tensor gy = at::randn({32, 32}) * 1e-3;
    const at::Tensor y = layer->Forward(x);
    // The scale this step used comes from earlier steps only; the first
    // step, with no history, scales x by its own amax (current scaling) and
    // has not cast a gradient yet.
    float want_x_scale = CurrentScale(x, Fp8Format::kE4M3), want_g_scale = 1.0f;
    if (step > 0) {
      want_x_scale = 448.0f / x_amax_seen;
      want_g_scale = 57344.0f / g_amax_seen;
    }
    EXPECT_FLOAT_EQ(st.scale[kRoleX].item<float>(), want_x_scale) << "step " << step;
    EXPECT_FLOAT_EQ(st.scale[kRoleGrad].item<float>(), want_g_scale) << "step " << step;
    const at::Tensor xq = QuantDequant(x, Fp8Format::kE4M3, st.scale[kRoleX].item<float>());
    const at::Tensor wq = QuantDequant(w, Fp8Format::kE4M3, st.scale[kRoleW].item<float>());
    EXPECT_LT(RelFro(y, xq.matmul(wq.t())), 1e-5) << "step " << step;
    // A recomputation (activation checkpointing) before the backward must
    // not move the scales.
    const at::Tensor again = layer->Forward(x.detach());
    EXPECT_TRUE(at::equal(again, y.detach())) << "step " << step;
    torch::autograd::backward({y}, {gy});
    EXPECT_EQ(st.pending_update.item<int64_t>(), 1);
    EXPECT_EQ(st.amax_history[kRoleX][0].item<float>(), x.detach().abs().max().item<float>());
    // Window of 4 steps (this one included) for the next step's scale.
    x_amax_seen = 0, g_amax_seen = 0;
    at::Tensor hist = st.amax_history.clone();
    for (int k = 0; k < 4; ++k) {
      x_amax_seen = std::max(x_amax_seen, hist[kRoleX][k].item<float>());
      g_amax_seen = std::max(g_amax_seen, hist[kRoleGrad][k].item<float>());
    }
  }
  // The outlier step (1) has left the 4-step window by step 5.
  EXPECT_LT(st.amax_history.max().item<float>(), 20.0f);
}

TEST(Fp8Linear, MetricsReportAmaxAndUnderflow) {
  auto session = Session(Emulated(Fp8Recipe::kDelayed));
  engine::LinearContext ctx = CpuContext(7);
  auto layer = std::dynamic_pointer_cast<Fp8Linear>(session->Create(Spec("blocks.0.mlp.down", 32, 16), ctx));
  session->Create(Spec("lm_head", 32, 64), ctx);
  ASSERT_NE(layer, nullptr);
  at::manual_seed(13);
  // Rows scaled by 1e-7 land below half the smallest subnormal: they flush.
  at::Tensor x = at::randn({16, 32});
  x.index_put_({at::indexing::Slice(0, 4)}, x.index({at::indexing::Slice(0, 4)}) * 1e-7);
  const float scale = CurrentScale(x, Fp8Format::kE4M3);  // the first step's
  int64_t want_under = 0;
  const at::Tensor xf = x.contiguous();
  for (int64_t i = 0; i < xf.numel(); ++i) {
    const float v = xf.data_ptr<float>()[i];
    want_under += v != 0 && kernels::Fp8EncodeReference(v * scale, Fp8Format::kE4M3) % 128 == 0;
  }
  ASSERT_GT(want_under, 0);
  layer->Forward(x);
  auto m = session->Metrics(/*reset_underflow=*/true);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].name, "blocks.0.mlp.down");
  EXPECT_TRUE(m[0].fp8);
  EXPECT_EQ(m[0].amax[kRoleX], x.abs().max().item<float>());
  EXPECT_EQ(m[0].amax[kRoleW], layer->weight().abs().max().item<float>());
  EXPECT_EQ(m[0].underflow[kRoleX], want_under);
  EXPECT_EQ(m[1].name, "lm_head");
  EXPECT_FALSE(m[1].fp8);
  EXPECT_EQ(session->Metrics(false)[0].underflow[kRoleX], 0);
}

TEST(Fp8Linear, TokenCountNotMultipleOf16RunsDense) {
  auto session = Session(Emulated(Fp8Recipe::kDelayed));
  engine::LinearContext ctx = CpuContext(8);
  auto layer = std::dynamic_pointer_cast<Fp8Linear>(session->Create(Spec("blocks.0.attn.qkv", 32, 48), ctx));
  ASSERT_NE(layer, nullptr);
  at::manual_seed(14);
  const at::Tensor x = at::randn({3, 5, 32});
  EXPECT_TRUE(at::allclose(layer->Forward(x), at::linear(x, layer->weight()), 1e-6, 1e-6));
  EXPECT_EQ(layer->state().amax_history.abs().sum().item<float>(), 0.0f);
}

TEST(Fp8Session, CheckpointRoundTripContinuesIdentically) {
  const Fp8Options o = Emulated(Fp8Recipe::kDelayed);
  auto run_steps = [](Fp8Linear& layer, int first, int last) {
    at::Tensor y;
    for (int step = first; step < last; ++step) {
      at::Generator g = at::detail::createCPUGenerator(100 + step);
      const at::Tensor x = at::randn({16, 32}, g).requires_grad_(true);
      y = layer.Forward(x);
      torch::autograd::backward({y}, {at::randn({16, 16}, g)});
    }
    return y;
  };
  auto a = Session(o);
  engine::LinearContext ca = CpuContext(9);
  auto la = std::dynamic_pointer_cast<Fp8Linear>(a->Create(Spec("blocks.5.attn.out", 32, 16), ca));
  run_steps(*la, 0, 3);
  const std::map<std::string, at::Tensor> saved = a->StateDict();
  EXPECT_EQ(saved.count("blocks.5.attn.out.fp8.x_amax_history"), 1u);

  auto b = Session(o);
  engine::LinearContext cb = CpuContext(9);
  auto lb = std::dynamic_pointer_cast<Fp8Linear>(b->Create(Spec("blocks.5.attn.out", 32, 16), cb));
  ASSERT_TRUE(at::equal(la->weight(), lb->weight()));
  ASSERT_TRUE(b->LoadStateDict(saved).ok());
  const at::Tensor ya = run_steps(*la, 3, 5);
  const at::Tensor yb = run_steps(*lb, 3, 5);
  EXPECT_TRUE(at::equal(ya, yb));
  EXPECT_TRUE(at::equal(la->state().scale, lb->state().scale));
  EXPECT_TRUE(at::equal(la->state().amax_history, lb->state().amax_history));

  std::map<std::string, at::Tensor> missing = saved;
  missing.erase("blocks.5.attn.out.fp8.grad_amax_history");
  absl::Status s = b->LoadStateDict(missing);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("grad_amax_history"), std::string::npos) << s;
}

TEST(Fp8Session, ChoicesRoundTripThroughTheCheckpointText) {
  auto a = Session(Emulated(Fp8Recipe::kDelayed));
  engine::LinearContext ctx = CpuContext(10);
  a->Create(Spec("blocks.0.attn.qkv", 64, 192), ctx);
  a->Create(Spec("lm_head", 64, 256), ctx);
  const std::string text = a->EncodeChoices();
  EXPECT_EQ(text, "blocks.0.attn.qkv=fp8;lm_head=bf16");
  auto decoded = Fp8Session::DecodeChoices(text);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->size(), 2u);

  // The resumed run takes the recorded choice, even where it would decide
  // otherwise now (here: a layer forced to BF16).
  Fp8Options o = Emulated(Fp8Recipe::kDelayed);
  o.forced_choices = {{"blocks.0.attn.qkv", false}};
  auto b = Session(o);
  EXPECT_EQ(std::dynamic_pointer_cast<Fp8Linear>(b->Create(Spec("blocks.0.attn.qkv", 64, 192), ctx)), nullptr);
  EXPECT_EQ(b->choices()[0].second.reason, "restored from the checkpoint");
  // Its FP8 state is then absent from b; loading a's state where b has an
  // FP8 layer that a ran in BF16 starts it fresh instead of failing.
  o.forced_choices.clear();
  auto c = Session(o);
  c->Create(Spec("blocks.1.attn.qkv", 64, 192), ctx);
  EXPECT_TRUE(c->LoadStateDict(a->StateDict()).ok());

  EXPECT_FALSE(Fp8Session::DecodeChoices("blocks.0.attn.qkv=fp16").ok());
  EXPECT_FALSE(Fp8Session::DecodeChoices("=fp8").ok());
}

}  // namespace
}  // namespace kp::fp8
