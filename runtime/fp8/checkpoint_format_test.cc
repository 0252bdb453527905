// The FP8 state goes through the checkpoint's safetensors files unchanged.
#include <cstdlib>
#include <string>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "runtime/engine/checkpoint/safetensors.h"
#include "runtime/fp8/fp8_linear.h"

namespace kp::fp8 {
namespace {

TEST(Fp8CheckpointFormat, StateRoundTripsThroughSafetensors) {
  Fp8Options o;
  o.allow_cpu_emulation = true;
  o.amax_history_len = 4;
  engine::LinearSpec spec;
  spec.name = "blocks.7.mlp.down";
  spec.in_features = 32;
  spec.out_features = 16;
  auto make = [&](std::shared_ptr<Fp8Session>* s) {
    *s = *Fp8Session::Create(o, CpuDevice());
    engine::LinearContext ctx;
    ctx.generator = at::detail::createCPUGenerator(3);
    return std::dynamic_pointer_cast<Fp8Linear>((*s)->Create(spec, ctx));
  };
  std::shared_ptr<Fp8Session> a, b;
  auto la = make(&a);
  auto lb = make(&b);
  for (int step = 0; step < 3; ++step) {
    at::Generator g = at::detail::createCPUGenerator(step);
    const at::Tensor x = at::randn({16, 32}, g).requires_grad_(true);
    torch::autograd::backward({la->Forward(x)}, {at::randn({16, 16}, g)});
  }
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp ? tmp : "/tmp") + "/fp8_state.safetensors";
  const auto state = a->StateDict();
  ASSERT_TRUE(ckpt::WriteSafetensors(path, ckpt::TensorMap(state.begin(), state.end())).ok());
  auto read = ckpt::ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_TRUE(b->LoadStateDict(std::map<std::string, at::Tensor>(read->tensors.begin(), read->tensors.end())).ok());
  EXPECT_TRUE(at::equal(la->state().amax_history, lb->state().amax_history));
  EXPECT_TRUE(at::equal(la->state().scale, lb->state().scale));
  EXPECT_TRUE(at::equal(la->state().steps, lb->state().steps));
  EXPECT_TRUE(at::equal(la->state().pending_update, lb->state().pending_update));
  EXPECT_EQ(lb->state().steps.item<int64_t>(), 2);  // the third step's update is still pending
}

}  // namespace
}  // namespace kp::fp8
