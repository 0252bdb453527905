#include "runtime/fp8/layer_state.h"

#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "kernels/fp8_cast.h"
#include "kernels/fp8_math.h"
#include "runtime/fp8/cast.h"

namespace kp::fp8 {
namespace {

using kernels::Fp8MaxFinite;
using kernels::Fp8ScaleFromAmax;

float At(const at::Tensor& t, int64_t i, int64_t j) { return t[i][j].item<float>(); }

// Writes this step's amax for every role, as the casts would.
void RecordStep(Fp8LayerState& s, float x, float w, float g) {
  s.amax_history[kRoleX][0].fill_(x);
  s.amax_history[kRoleW][0].fill_(w);
  s.amax_history[kRoleGrad][0].fill_(g);
}

TEST(Fp8Recipe, DelayedScaleIsMaxOverTheWindowAndHistoryRolls) {
  const int64_t len = 3;
  Fp8LayerState s = Fp8LayerState::Create(len, at::kCPU);
  const float xs[] = {2.0f, 8.0f, 1.0f, 0.5f, 0.25f};
  for (int step = 0; step < 5; ++step) {
    RecordStep(s, xs[step], 0.1f * (step + 1), 1e-3f);
    EndStep(s, Fp8Recipe::kDelayed, /*margin=*/0);
    // The window holds the last `len` steps (including this one).
    float window_max = 0;
    for (int k = std::max(0, step - static_cast<int>(len) + 1); k <= step; ++k) {
      window_max = std::max(window_max, xs[k]);
    }
    EXPECT_EQ(s.scale[kRoleX].item<float>(), Fp8ScaleFromAmax(window_max, 448.0f, 0, -1.0f))
        << "step " << step;
    EXPECT_EQ(s.scale[kRoleGrad].item<float>(), Fp8ScaleFromAmax(1e-3f, 57344.0f, 0, -1.0f));
    EXPECT_EQ(s.scale_inv[kRoleX].item<float>(), 1.0f / s.scale[kRoleX].item<float>());
    // Column 0 is cleared for the next step; column 1 holds this step.
    EXPECT_EQ(At(s.amax_history, kRoleX, 0), 0.0f);
    EXPECT_EQ(At(s.amax_history, kRoleX, 1), xs[step]);
  }
  // 8.0 (step 1) has left the window by step 4: the scale grew back.
  EXPECT_EQ(s.scale[kRoleX].item<float>(), 448.0f / 1.0f);
}

TEST(Fp8Recipe, MarginDividesByPowersOfTwo) {
  Fp8LayerState s = Fp8LayerState::Create(4, at::kCPU);
  RecordStep(s, 3.0f, 3.0f, 3.0f);
  EndStep(s, Fp8Recipe::kDelayed, /*margin=*/2);
  EXPECT_EQ(s.scale[kRoleX].item<float>(), Fp8ScaleFromAmax(3.0f, 448.0f, 2, -1.0f));
  EXPECT_FLOAT_EQ(s.scale[kRoleX].item<float>(), 448.0f / 3.0f / 4.0f);
  EXPECT_FLOAT_EQ(s.scale[kRoleGrad].item<float>(), 57344.0f / 3.0f / 4.0f);
}

TEST(Fp8Recipe, ZeroOrNonFiniteAmaxKeepsThePreviousScale) {
  Fp8LayerState s = Fp8LayerState::Create(2, at::kCPU);
  RecordStep(s, 4.0f, 4.0f, 4.0f);
  EndStep(s, Fp8Recipe::kDelayed, 0);
  const float before = s.scale[kRoleX].item<float>();
  EXPECT_EQ(before, 112.0f);
  // Two all-zero steps flush 4.0 out of the window: the scale must stay, not
  // become Inf from 448 / 0.
  RecordStep(s, 0.0f, 0.0f, 0.0f);
  EndStep(s, Fp8Recipe::kDelayed, 0);
  RecordStep(s, 0.0f, 0.0f, 0.0f);
  EndStep(s, Fp8Recipe::kDelayed, 0);
  EXPECT_EQ(s.scale[kRoleX].item<float>(), before);
  EXPECT_TRUE(std::isfinite(s.scale_inv[kRoleX].item<float>()));
  RecordStep(s, std::numeric_limits<float>::infinity(), 0.0f, 0.0f);
  EndStep(s, Fp8Recipe::kDelayed, 0);
  EXPECT_EQ(s.scale[kRoleX].item<float>(), before);
}

TEST(Fp8Recipe, CurrentRecipeLeavesScalesToTheCasts) {
  Fp8LayerState s = Fp8LayerState::Create(1, at::kCPU);
  s.scale.fill_(7.0f);
  RecordStep(s, 4.0f, 4.0f, 4.0f);
  EndStep(s, Fp8Recipe::kCurrent, 0);
  EXPECT_EQ(s.scale[kRoleX].item<float>(), 7.0f);
  EXPECT_EQ(At(s.amax_history, kRoleX, 0), 0.0f);
}

TEST(Fp8State, SaveRestoreRoundTrip) {
  Fp8LayerState a = Fp8LayerState::Create(4, at::kCPU);
  for (int step = 0; step < 3; ++step) {
    RecordStep(a, 1.0f + step, 0.5f * (step + 1), 1e-2f * (step + 3));
    EndStep(a, Fp8Recipe::kDelayed, 1);
  }
  RecordStep(a, 9.0f, 0.25f, 0.5f);  // a step in flight
  a.pending_update.fill_(1);
  std::map<std::string, at::Tensor> dict;
  AppendStateDict("blocks.3.attn.qkv", a, &dict);
  for (const char* name : {"x_amax_history", "w_amax_history", "grad_amax_history", "x_scale",
                           "w_scale", "grad_scale", "pending_update", "steps"}) {
    EXPECT_EQ(dict.count(std::string("blocks.3.attn.qkv.fp8.") + name), 1u) << name;
  }
  EXPECT_EQ(dict.size(), 8u);

  Fp8LayerState b = Fp8LayerState::Create(4, at::kCPU);
  ASSERT_TRUE(LoadStateDict("blocks.3.attn.qkv", dict, &b).ok());
  EXPECT_TRUE(at::equal(a.amax_history, b.amax_history));
  EXPECT_TRUE(at::equal(a.scale, b.scale));
  EXPECT_TRUE(at::equal(a.scale_inv, b.scale_inv));
  EXPECT_EQ(b.pending_update.item<int64_t>(), 1);
  EXPECT_EQ(b.steps.item<int64_t>(), 3);
  // Both continue identically.
  EndStep(a, Fp8Recipe::kDelayed, 1);
  EndStep(b, Fp8Recipe::kDelayed, 1);
  EXPECT_TRUE(at::equal(a.scale, b.scale));
  EXPECT_TRUE(at::equal(a.amax_history, b.amax_history));
}

TEST(Fp8State, RestoreNamesWhatIsMissingOrMismatched) {
  Fp8LayerState a = Fp8LayerState::Create(4, at::kCPU);
  std::map<std::string, at::Tensor> dict;
  AppendStateDict("blocks.0.mlp.down", a, &dict);
  Fp8LayerState shorter = Fp8LayerState::Create(2, at::kCPU);
  absl::Status s = LoadStateDict("blocks.0.mlp.down", dict, &shorter);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("amax_history_len is 2"), std::string::npos) << s;
  dict.erase("blocks.0.mlp.down.fp8.w_scale");
  s = LoadStateDict("blocks.0.mlp.down", dict, &a);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("blocks.0.mlp.down.fp8.w_scale"), std::string::npos) << s;
}

// The tensor-level cast on CPU: the reference's bits, the history slot
// collecting the max over several casts, the current recipe's own scale.
TEST(Fp8TensorCast, CpuCastAccumulatesAmaxAndMatchesReference) {
  at::manual_seed(3);
  Fp8LayerState s = Fp8LayerState::Create(2, at::kCPU);
  s.scale[kRoleX].fill_(10.0f);
  const at::Tensor x1 = at::randn({32, 48}).to(at::kBFloat16);
  const at::Tensor x2 = at::randn({32, 48}).to(at::kBFloat16) * 3;
  Fp8Cast c1 = CastToFp8(x1, kRoleX, s, Fp8Recipe::kDelayed, 0, {true, true});
  CastToFp8(x2, kRoleX, s, Fp8Recipe::kDelayed, 0, {true, false});
  const float want_amax = std::max(x1.abs().max().item<float>(), x2.abs().max().item<float>());
  EXPECT_EQ(At(s.amax_history, kRoleX, 0), want_amax);
  EXPECT_EQ(s.scale_inv[kRoleX].item<float>(), 0.1f);
  ASSERT_EQ(c1.data.scalar_type(), at::kFloat8_e4m3fn);
  EXPECT_TRUE(at::equal(c1.data_t.view(at::kByte), c1.data.t().contiguous().view(at::kByte)));
  const at::Tensor xf = x1.to(at::kFloat).contiguous();
  const at::Tensor codes = c1.data.view(at::kByte).contiguous();
  for (int64_t i = 0; i < xf.numel(); ++i) {
    const float v = xf.data_ptr<float>()[i];
    ASSERT_EQ(codes.data_ptr<uint8_t>()[i], kernels::Fp8EncodeReference(v * 10.0f, kernels::Fp8Format::kE4M3));
  }
  // ATen's decode of our codes agrees with ours (same format, same bits).
  const at::Tensor decoded = Fp8ToFloat(c1.data);
  for (int64_t i = 0; i < xf.numel(); ++i) {
    ASSERT_EQ(decoded.data_ptr<float>()[i],
              kernels::Fp8DecodeReference(codes.data_ptr<uint8_t>()[i], kernels::Fp8Format::kE4M3));
  }

  Fp8LayerState cur = Fp8LayerState::Create(1, at::kCPU);
  Fp8Cast g = CastToFp8(x2.to(at::kFloat), kRoleGrad, cur, Fp8Recipe::kCurrent, 0, {true, false});
  EXPECT_EQ(g.data.scalar_type(), at::kFloat8_e5m2);
  EXPECT_EQ(cur.scale[kRoleGrad].item<float>(),
            Fp8ScaleFromAmax(x2.abs().max().item<float>(), 57344.0f, 0, 1.0f));
  EXPECT_EQ(Fp8ToFloat(g.data).abs().max().item<float>(), 57344.0f);
}

}  // namespace
}  // namespace kp::fp8
