// The FP8 Linear inside the engine's transformer, on CPU through the
// emulation path: a short training run tracks the fp32 run's loss, and
// activation recomputation reproduces the FP8 forward exactly.
#include <chrono>
#include <cmath>
#include <memory>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/optim/adamw.h>

#include "runtime/engine/attention.h"
#include "runtime/engine/config.h"
#include "runtime/engine/linear.h"
#include "runtime/engine/model.h"
#include "runtime/fp8/fp8_linear.h"

namespace kp::fp8 {
namespace {

engine::ModelConfig TinyModel() {
  engine::ModelConfig c;
  c.vocab_size = 64;
  c.d_model = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_hidden = 128;
  c.max_seq_len = 64;
  return c;
}

// A learnable source: each token is followed by perm[token] 90% of the time.
std::pair<at::Tensor, at::Tensor> Batch(int64_t step, int64_t batch, int64_t seq, int64_t vocab) {
  at::Generator perm_gen = at::detail::createCPUGenerator(7);
  const at::Tensor perm = at::randperm(vocab, perm_gen, at::kLong);
  at::Generator g = at::detail::createCPUGenerator(1000 + step);
  at::Tensor seqs = at::empty({batch, seq + 1}, at::kLong);
  auto s = seqs.accessor<int64_t, 2>();
  const at::Tensor noise = at::rand({batch, seq + 1}, g);
  const at::Tensor rnd = at::randint(vocab, {batch, seq + 1}, g, at::kLong);
  auto n = noise.accessor<float, 2>();
  auto r = rnd.accessor<int64_t, 2>();
  auto p = perm.accessor<int64_t, 1>();
  for (int64_t b = 0; b < batch; ++b) {
    s[b][0] = r[b][0];
    for (int64_t t = 1; t <= seq; ++t) s[b][t] = n[b][t] < 0.9f ? p[s[b][t - 1]] : r[b][t];
  }
  return {seqs.narrow(1, 0, seq).contiguous(), seqs.narrow(1, 1, seq).contiguous()};
}

struct TrainRun {
  std::vector<double> losses;
  std::shared_ptr<engine::Transformer> model;  // keeps the FP8 layers alive for metrics
};

TrainRun Train(engine::LinearFactory& factory, int steps, engine::ActivationCheckpointing ckpt) {
  at::set_num_threads(1);  // tiny GEMMs: more threads only contend on a small CI machine
  engine::LinearContext ctx;
  ctx.device = at::kCPU;
  ctx.param_dtype = at::kFloat;
  ctx.compute_dtype = at::kFloat;
  ctx.generator = at::detail::createCPUGenerator(42);
  const engine::ModelConfig mc = TinyModel();
  std::shared_ptr<engine::Attention> attention = engine::MakeLocalAttention();
  auto model = std::make_shared<engine::Transformer>(mc, factory, ctx, attention, ckpt);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(3e-3).weight_decay(0.0));
  const int64_t batch = 4, seq = 32;  // 128 tokens: a multiple of 16
  const engine::AttentionContext actx = engine::WholeSequenceContext(seq, at::kCPU);
  TrainRun run;
  for (int step = 0; step < steps; ++step) {
    auto [inputs, targets] = Batch(step, batch, seq, mc.vocab_size);
    opt.zero_grad();
    at::Tensor loss = model->Loss(inputs, targets, actx, /*chunk_tokens=*/64);
    loss.backward();
    opt.step();
    run.losses.push_back(loss.item<double>());
  }
  run.model = model;
  return run;
}

double MeanLast(const std::vector<double>& v, size_t n) {
  double s = 0;
  for (size_t i = v.size() - n; i < v.size(); ++i) s += v[i];
  return s / n;
}

std::shared_ptr<Fp8Session> EmulatedSession() {
  Fp8Options o;
  o.recipe = Fp8Recipe::kDelayed;
  o.amax_history_len = 8;
  o.allow_cpu_emulation = true;
  o.fast_accum_forward = false;  // ATen's CPU _scaled_mm is faster without it
  auto s = Fp8Session::Create(o, CpuDevice());
  KP_CHECK(s.ok());
  return *s;
}

TEST(Fp8Model, ShortTrainingRunTracksFp32) {
  const int steps = 60;
  auto dense = engine::MakeDenseLinearFactory();
  const auto t0 = std::chrono::steady_clock::now();
  const TrainRun ref = Train(*dense, steps, engine::ActivationCheckpointing::kNone);
  const auto t1 = std::chrono::steady_clock::now();
  auto session = EmulatedSession();
  auto fp8_factory = MakeFp8LinearFactory(session);
  const TrainRun fp8 = Train(*fp8_factory, steps, engine::ActivationCheckpointing::kNone);
  const auto t2 = std::chrono::steady_clock::now();
  std::printf("[fp8] fp32 run %.1f s, fp8 run %.1f s\n", std::chrono::duration<double>(t1 - t0).count(),
              std::chrono::duration<double>(t2 - t1).count());
  // 2 blocks x (qkv, out, gate_up, down) in FP8; the LM head stays BF16/dense.
  EXPECT_EQ(session->fp8_layers().size(), 8u);
  const double ref_end = MeanLast(ref.losses, 10), fp8_end = MeanLast(fp8.losses, 10);
  const double gap_pct = 100.0 * (fp8_end - ref_end) / ref_end;
  std::printf("[fp8] loss start %.4f, end fp32 %.4f, fp8 %.4f (gap %.2f%%)\n", ref.losses[0], ref_end,
              fp8_end, gap_pct);
  EXPECT_LT(fp8_end, 0.6 * fp8.losses[0]);  // it learns
  EXPECT_LT(std::abs(gap_pct), 2.0);  // the convergence bar
  for (const auto& m : session->Metrics(false)) {
    if (!m.fp8) continue;
    EXPECT_GT(m.amax[kRoleW], 0.0f) << m.name;
    EXPECT_GT(m.scale[kRoleX], 1.0f) << m.name;  // delayed scales moved off their initial 1
  }
}

TEST(Fp8Model, ActivationRecomputationReproducesTheFp8Run) {
  const int steps = 4;
  auto plain_session = EmulatedSession();
  auto plain = MakeFp8LinearFactory(plain_session);
  const TrainRun a = Train(*plain, steps, engine::ActivationCheckpointing::kNone);
  auto ckpt_session = EmulatedSession();
  auto ckpt = MakeFp8LinearFactory(ckpt_session);
  const TrainRun b = Train(*ckpt, steps, engine::ActivationCheckpointing::kFull);
  for (int i = 0; i < steps; ++i) EXPECT_DOUBLE_EQ(a.losses[i], b.losses[i]) << "step " << i;
  auto sa = plain_session->StateDict(), sb = ckpt_session->StateDict();
  ASSERT_EQ(sa.size(), sb.size());
  for (const auto& [name, t] : sa) EXPECT_TRUE(at::equal(t, sb.at(name))) << name;
}

}  // namespace
}  // namespace kp::fp8
