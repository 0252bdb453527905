// The fused AdamW path (at::_fused_adamw_, which the trainer uses on CUDA)
// against torch::optim::AdamW, both on CPU in float32: several steps with a
// changing learning rate, decay and no-decay groups, random gradients.
#include "runtime/engine/optimizer.h"

#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "runtime/engine/test_util.h"

namespace kp::engine {
namespace {

using testing::RelErr;
using testing::TinyConfig;

struct Built {
  std::unique_ptr<LinearFactory> factory;
  std::shared_ptr<Transformer> model;
  std::unique_ptr<Optimizer> opt;
};

// Same seed -> same initial weights.
Built Build(const TrainingConfig& t) {
  Built b;
  b.factory = MakeDenseLinearFactory();
  LinearContext ctx;
  ctx.param_dtype = at::kFloat;
  ctx.compute_dtype = at::kFloat;
  ctx.generator = at::make_generator<at::CPUGeneratorImpl>(5);
  b.model = std::make_shared<Transformer>(TinyConfig(), *b.factory, ctx, MakeLocalAttention(),
                                          ActivationCheckpointing::kNone);
  b.opt = std::make_unique<Optimizer>(*b.model, t);
  return b;
}

// Gives every parameter the same random gradient in both optimizers.
void SetGradients(Optimizer& a, Optimizer& b, at::Generator& g) {
  ASSERT_EQ(a.parameters().size(), b.parameters().size());
  for (size_t i = 0; i < a.parameters().size(); ++i) {
    at::Tensor grad = at::randn(a.parameters()[i].sizes(), g, at::kFloat);
    a.parameters()[i].mutable_grad() = grad.clone();
    b.parameters()[i].mutable_grad() = grad.clone();
  }
}

TEST(OptimizerTest, FusedStepMatchesTorchAdamWOverSeveralSteps) {
  TrainingConfig t;
  t.lr = 1e-2;  // large, so that the weight decay term is visible
  t.weight_decay = 0.1;
  Built ref = Build(t);
  Built fused = Build(t);
  ASSERT_FALSE(ref.model->DecayParameters().empty());
  ASSERT_FALSE(ref.model->NoDecayParameters().empty());
  std::vector<at::Tensor> initial;
  for (const auto& p : ref.opt->parameters()) initial.push_back(p.detach().clone());

  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(7);
  const double lrs[] = {1e-2, 5e-3, 2e-2, 1e-3};
  for (int step = 0; step < 4; ++step) {
    ref.opt->SetLearningRate(lrs[step]);
    fused.opt->SetLearningRate(lrs[step]);
    SetGradients(*ref.opt, *fused.opt, g);
    ref.opt->Step();  // CPU parameters: torch::optim::AdamW
    fused.opt->FusedStep();
    for (size_t i = 0; i < ref.opt->parameters().size(); ++i) {
      const at::Tensor& got = fused.opt->parameters()[i];
      const at::Tensor& want = ref.opt->parameters()[i];
      ASSERT_TRUE(at::isfinite(got).all().item<bool>()) << "step " << step << " param " << i;
      // Both compute in fp32 in a slightly different order: a few ulps.
      EXPECT_LT(RelErr(got - initial[i], want - initial[i]), 1e-4)
          << "step " << step << " param " << i;
    }
  }
  // The fused path keeps the same state as torch::optim (checkpoints).
  auto want = ref.opt->StateDict();
  auto got = fused.opt->StateDict();
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, tensor] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    if (name.size() > 5 && name.substr(name.size() - 5) == ".step") {
      EXPECT_EQ(got[name].item<int64_t>(), 4) << name;
      EXPECT_EQ(tensor.item<int64_t>(), 4) << name;
    } else {
      EXPECT_LT(RelErr(got[name], tensor), 1e-4) << name;
    }
  }
}

// Clipping folded into the step: the fused kernel dividing by norm / clip as
// it reads the gradients equals scaling them first and stepping (and the CPU
// torch::optim path does the same).
TEST(OptimizerTest, GradDivisorEqualsScalingTheGradientsFirst) {
  TrainingConfig t;
  t.lr = 1e-2;
  t.weight_decay = 0.1;
  Built scaled = Build(t);
  Built folded = Build(t);
  Built folded_cpu = Build(t);
  std::vector<at::Tensor> initial;
  for (const auto& p : scaled.opt->parameters()) initial.push_back(p.detach().clone());
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(11);
  for (int step = 0; step < 3; ++step) {
    SetGradients(*scaled.opt, *folded.opt, g);
    for (size_t i = 0; i < scaled.opt->parameters().size(); ++i) {
      folded_cpu.opt->parameters()[i].mutable_grad() = scaled.opt->parameters()[i].grad().clone();
    }
    const double divisor = 3.5 + step;  // norm / clip > 1
    ScaleGradients(scaled.opt->parameters(), at::scalar_tensor(1.0 / divisor));
    scaled.opt->FusedStep();
    folded.opt->FusedStep(at::scalar_tensor(divisor, at::kFloat));
    folded_cpu.opt->Step(at::scalar_tensor(divisor, at::kFloat));
    for (size_t i = 0; i < scaled.opt->parameters().size(); ++i) {
      const at::Tensor want = scaled.opt->parameters()[i] - initial[i];
      EXPECT_LT(RelErr(folded.opt->parameters()[i] - initial[i], want), 1e-4) << step << " " << i;
      EXPECT_LT(RelErr(folded_cpu.opt->parameters()[i] - initial[i], want), 1e-4) << step << " " << i;
    }
  }
}

TEST(OptimizerTest, GlobalGradNormMatchesFloat64) {
  TrainingConfig t;
  Built b = Build(t);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(13);
  double sq = 0;
  for (const at::Tensor& p : b.opt->parameters()) {
    at::Tensor grad = at::randn(p.sizes(), g, at::kFloat);
    p.mutable_grad() = grad;
    sq += grad.to(at::kDouble).pow(2).sum().item<double>();
  }
  EXPECT_NEAR(GlobalGradNorm(b.opt->parameters()).item<double>(), std::sqrt(sq), 1e-5 * std::sqrt(sq));
}

// A restored state continues with the loaded step count (bias correction).
TEST(OptimizerTest, FusedStepContinuesFromLoadedState) {
  TrainingConfig t;
  t.lr = 1e-2;
  Built ref = Build(t);
  Built fused = Build(t);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(8);
  for (int step = 0; step < 2; ++step) {
    SetGradients(*ref.opt, *fused.opt, g);
    ref.opt->Step();
    fused.opt->FusedStep();
  }
  // A fresh fused optimizer over the same weights, loaded from the reference.
  Built resumed = Build(t);
  for (size_t i = 0; i < resumed.opt->parameters().size(); ++i) {
    at::NoGradGuard no_grad;
    resumed.opt->parameters()[i].copy_(ref.opt->parameters()[i]);
  }
  ASSERT_TRUE(resumed.opt->LoadStateDict(ref.opt->StateDict()).ok());
  std::vector<at::Tensor> before;
  for (const auto& p : ref.opt->parameters()) before.push_back(p.detach().clone());
  SetGradients(*ref.opt, *resumed.opt, g);
  ref.opt->Step();
  resumed.opt->FusedStep();
  for (size_t i = 0; i < ref.opt->parameters().size(); ++i) {
    EXPECT_LT(RelErr(resumed.opt->parameters()[i] - before[i], ref.opt->parameters()[i] - before[i]),
              1e-4)
        << i;
  }
}

}  // namespace
}  // namespace kp::engine
