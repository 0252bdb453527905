#include "runtime/fp8/metrics_sink.h"

#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

namespace kp::fp8 {
namespace {

class Recorder final : public engine::MetricsSink {
 public:
  void OnStep(const engine::StepMetrics& m) override { steps.push_back(m); }
  std::vector<engine::StepMetrics> steps;
};

std::map<std::string, double> Extra(const engine::StepMetrics& m) {
  std::map<std::string, double> out(m.extra.begin(), m.extra.end());
  EXPECT_EQ(out.size(), m.extra.size()) << "duplicate keys";
  return out;
}

// One FP8 layer (CPU emulation: the reference cast, ATen's CPU _scaled_mm)
// run forward and backward on random input holding a few values far below
// what the layer's E4M3 scale can represent.
struct OneLayer {
  std::shared_ptr<Fp8Session> session;
  std::shared_ptr<engine::LinearLayer> layer;

  OneLayer() {
    Fp8Options o;
    o.recipe = Fp8Recipe::kCurrent;
    o.allow_cpu_emulation = true;
    o.fast_accum_forward = false;
    session = *Fp8Session::Create(o, CpuDevice());
    engine::LinearContext ctx;
    ctx.generator = at::make_generator<at::CPUGeneratorImpl>(7);
    engine::LinearSpec spec;
    spec.name = "blocks.0.mlp.down";
    spec.in_features = 64;
    spec.out_features = 32;
    layer = session->Create(spec, ctx);
  }

  void Step(int tiny) {
    at::Tensor x = at::randn({32, 64});
    x.view(-1).narrow(0, 0, tiny).fill_(1e-30);  // underflows at any sane scale
    x.requires_grad_(true);
    at::Tensor y = layer->Forward(x);
    torch::autograd::backward({y}, {at::randn({32, 32})});
  }
};

TEST(Fp8MetricsSink, ReportsEveryFp8LayerOnLoggedSteps) {
  OneLayer l;
  Recorder inner;
  Fp8MetricsSink sink(&inner, l.session, /*every=*/2, /*total_steps=*/5);
  for (int64_t step = 0; step < 5; ++step) {
    l.Step(/*tiny=*/5);
    engine::StepMetrics m;
    m.step = step;
    m.loss = 1.0;
    sink.OnStep(m);
  }
  ASSERT_EQ(inner.steps.size(), 5u);
  // Steps 0, 2 and 4 (the last) carry the statistics; 1 and 3 pass through.
  EXPECT_TRUE(inner.steps[1].extra.empty());
  EXPECT_TRUE(inner.steps[3].extra.empty());
  for (int i : {0, 2, 4}) {
    const auto e = Extra(inner.steps[i]);
    EXPECT_DOUBLE_EQ(inner.steps[i].loss, 1.0);
    EXPECT_EQ(e.at("fp8.layers"), 1.0);
    for (const char* role : {"x", "w", "grad"}) {
      const std::string k = std::string("fp8.blocks.0.mlp.down.");
      EXPECT_GT(e.at(k + "amax_" + role), 0.0) << role;
      EXPECT_GT(e.at(k + "scale_" + role), 0.0) << role;
      EXPECT_GE(e.at(k + "underflow_" + role), 0.0) << role;
    }
    // 5 tiny inputs a step, counted since the previous report: step 0 saw
    // one step, steps 2 and 4 two each.
    EXPECT_EQ(e.at("fp8.blocks.0.mlp.down.underflow_x"), i == 0 ? 5.0 : 10.0) << "step " << i;
    EXPECT_GE(e.at("fp8.underflow"), e.at("fp8.blocks.0.mlp.down.underflow_x"));
  }
}

TEST(Fp8MetricsSink, Bf16LayersAreNotReported) {
  Fp8Options o;
  o.allow_cpu_emulation = true;
  o.forced_choices["blocks.0.attn.out"] = false;  // as restored from a checkpoint
  auto session = *Fp8Session::Create(o, CpuDevice());
  engine::LinearContext ctx;
  ctx.generator = at::make_generator<at::CPUGeneratorImpl>(7);
  engine::LinearSpec spec;
  spec.name = "blocks.0.attn.out";
  spec.in_features = spec.out_features = 32;
  auto layer = session->Create(spec, ctx);
  Recorder inner;
  Fp8MetricsSink sink(&inner, session, 1, 1);
  sink.OnStep(engine::StepMetrics{});
  const auto e = Extra(inner.steps.at(0));
  EXPECT_EQ(e.at("fp8.layers"), 0.0);
  EXPECT_EQ(e.count("fp8.blocks.0.attn.out.amax_x"), 0u);
}

}  // namespace
}  // namespace kp::fp8
