// Runs on the GPU machine (skips on CPU): host-offloaded checkpoints on
// CUDA — the round trip survives memory reuse by the compute stream; a
// model with offload on trains to the same loss (bitwise: same kernels on
// the same inputs) and gradients (bf16 tolerance: cuDNN's attention
// backward is not bitwise deterministic) as with it off, with a lower peak;
// the tiled MLP matches the untiled one in bf16.
#include <chrono>
#include <cstdio>

#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <gtest/gtest.h>

#include "kernels/gpu_test_util.h"
#include "runtime/engine/model.h"
#include "runtime/engine/offload.h"

namespace kp::engine {
namespace {

const at::Device kCuda(at::kCUDA, 0);

double RelErr(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor bd = b.detach().to(at::kDouble);
  return (a.detach().to(at::kDouble) - bd).abs().max().item<double>() /
         (bd.abs().max().item<double>() + 1e-30);
}

int64_t PeakBytes() {
  return c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].peak;
}

TEST(OffloadGpuTest, RoundTripSurvivesMemoryReuse) {
  KP_SKIP_WITHOUT_GPU();
  auto offloader = MakeActivationOffloader(kCuda);
  auto opts = at::TensorOptions().dtype(at::kBFloat16).device(kCuda);
  std::vector<at::Tensor> refs;
  std::vector<int64_t> slots;
  for (int i = 0; i < 3; ++i) {
    at::Tensor x = at::randn({4096, 4096}, opts);  // 32 MiB each
    refs.push_back(x.clone());
    slots.push_back(offloader->Stash(x));
    // x is dropped here: the allocator must not hand its block to the
    // writes below before the side stream has copied it out.
  }
  for (int i = 0; i < 8; ++i) at::full({4096, 4096}, -7.0, opts);
  offloader->Prefetch(slots[1]);
  for (int i = 0; i < 8; ++i) at::full({4096, 4096}, 3.0, opts);
  for (int i = 2; i >= 0; --i) {
    at::Tensor back = offloader->Fetch(slots[static_cast<size_t>(i)]);
    EXPECT_TRUE(at::equal(back, refs[static_cast<size_t>(i)])) << "slot " << i;
  }
  ActivationOffloader::Stats s = offloader->stats();
  EXPECT_EQ(s.stashed, 3);
  EXPECT_EQ(s.prefetched, 1);
  EXPECT_EQ(s.fetched_late, 2);
  EXPECT_EQ(s.host_bytes, 0);
}

struct Built {
  std::unique_ptr<LinearFactory> factory;
  std::shared_ptr<Transformer> model;
};

ModelConfig GpuConfig() {
  ModelConfig c;
  c.vocab_size = 512;
  c.d_model = 256;
  c.n_layers = 6;
  c.n_heads = 4;  // head_dim 64
  c.n_kv_heads = 4;
  c.ffn_hidden = 704;
  c.max_seq_len = 16384;
  return c;
}

Built Build(const ModelConfig& c) {
  Built b;
  b.factory = MakeDenseLinearFactory();
  LinearContext ctx;
  ctx.device = kCuda;
  ctx.param_dtype = at::kFloat;
  ctx.compute_dtype = at::kBFloat16;
  ctx.generator = at::make_generator<at::CPUGeneratorImpl>(17);
  b.model = std::make_shared<Transformer>(c, *b.factory, ctx, MakeLocalAttention(),
                                          ActivationCheckpointing::kFull);
  return b;
}

struct Outcome {
  at::Tensor loss;
  std::vector<at::Tensor> grads;
  int64_t peak = 0;
  double seconds = 0;
};

Outcome Step(Transformer& m, const at::Tensor& tokens, const LongContextOptions& lc) {
  m.set_long_context(lc);
  const int64_t t = tokens.size(1) - 1;
  for (auto& p : m.parameters()) p.mutable_grad() = at::Tensor();
  c10::cuda::device_synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
  const auto start = std::chrono::steady_clock::now();
  at::Tensor loss = m.Loss(tokens.narrow(1, 0, t), tokens.narrow(1, 1, t),
                           WholeSequenceContext(t, kCuda), /*chunk_tokens=*/4096);
  loss.backward();
  c10::cuda::device_synchronize();
  Outcome o;
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  o.peak = PeakBytes();
  o.loss = loss.detach().cpu();
  for (const auto& p : m.parameters()) o.grads.push_back(p.grad().detach().cpu());
  return o;
}

TEST(OffloadGpuTest, ModelSameLossAndGradientsLowerPeak) {
  KP_SKIP_WITHOUT_GPU();
  const ModelConfig c = GpuConfig();
  Built b = Build(c);
  const int64_t t = 16384;
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(23);
  at::Tensor tokens = at::randint(c.vocab_size, {1, t + 1}, g, at::kLong).to(kCuda);
  Step(*b.model, tokens, {false, 2048});  // warm-up: cuDNN plans, pinned pool
  Outcome off = Step(*b.model, tokens, {false, 2048});
  Outcome on = Step(*b.model, tokens, {true, 2048});
  Outcome off2 = Step(*b.model, tokens, {false, 2048});
  const double unit = static_cast<double>(t * c.d_model * 2);  // one bf16 block input
  std::printf("offload off: peak %.1f MiB, %.3f s; on: peak %.1f MiB, %.3f s; one block input "
              "%.1f MiB\n",
              off.peak / 1048576.0, off.seconds, on.peak / 1048576.0, on.seconds,
              unit / 1048576.0);
  EXPECT_TRUE(at::equal(off.loss, on.loss))
      << off.loss.item<float>() << " vs " << on.loss.item<float>();
  for (size_t i = 0; i < off.grads.size(); ++i) {
    // The same comparison between two runs without offload bounds the noise.
    const double noise = RelErr(off2.grads[i], off.grads[i]);
    EXPECT_LE(RelErr(on.grads[i], off.grads[i]), std::max(2e-2, 4 * noise)) << "parameter " << i;
  }
  // Six block inputs stay on the device without offload, at most two with it
  // (the last block's and one prefetched); allocator rounding eats part of
  // the rest (measured on an H100: 18.5 MiB saved of 8 MiB inputs).
  EXPECT_LT(static_cast<double>(on.peak), static_cast<double>(off.peak) - 2.0 * unit);
}

TEST(TiledMlpGpuTest, MatchesUntiledBf16) {
  KP_SKIP_WITHOUT_GPU();
  const ModelConfig c = GpuConfig();
  Built b = Build(c);
  const int64_t t = 8192;
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(29);
  at::Tensor tokens = at::randint(c.vocab_size, {1, t + 1}, g, at::kLong).to(kCuda);
  Outcome plain = Step(*b.model, tokens, {false, 0});
  Outcome tiled = Step(*b.model, tokens, {false, 1000});  // short last tile too
  std::printf("MLP tiles: peak %.1f MiB vs untiled %.1f MiB\n", tiled.peak / 1048576.0,
              plain.peak / 1048576.0);
  EXPECT_LT(RelErr(tiled.loss, plain.loss), 1e-2);
  for (size_t i = 0; i < plain.grads.size(); ++i) {
    EXPECT_LT(RelErr(tiled.grads[i], plain.grads[i]), 5e-2) << "parameter " << i;
  }
  EXPECT_LT(tiled.peak, plain.peak);
}

}  // namespace
}  // namespace kp::engine
