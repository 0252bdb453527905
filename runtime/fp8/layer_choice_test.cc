#include "runtime/fp8/layer_choice.h"

#include <map>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "runtime/comm/fake_communicator.h"

namespace kp::fp8 {
namespace {

// Returns preset timings per shape and counts calls.
class FakeTimer final : public LayerTimer {
 public:
  std::map<LinearShape, LayerTiming> times;
  int calls = 0;
  absl::StatusOr<LayerTiming> Time(const LinearShape& shape, int64_t iters) override {
    ++calls;
    last_iters = iters;
    auto it = times.find(shape);
    if (it == times.end()) return absl::InternalError("no timing for this shape");
    return it->second;
  }
  int64_t last_iters = 0;
};

Fp8Options WithTokens(int64_t tokens) {
  Fp8Options o;
  o.tokens = tokens;
  o.autotune_iters = 3;
  return o;
}

TEST(LayerChoice, FasterFp8IsKeptSlowerFp8FallsBackToBf16) {
  FakeTimer t;
  const LinearShape big{16384, 2048, 6144}, small{16384, 64, 64};
  t.times[big] = {100.0, 60.0};
  t.times[small] = {5.0, 9.0};
  const Fp8Options o = WithTokens(16384);
  LayerChoice c = ChooseLayerPrecision(big, o, &t);
  EXPECT_TRUE(c.fp8);
  EXPECT_TRUE(c.measured);
  EXPECT_EQ(t.last_iters, 3);
  EXPECT_NE(c.reason.find("1.67x"), std::string::npos) << c.reason;
  c = ChooseLayerPrecision(small, o, &t);
  EXPECT_FALSE(c.fp8);
  EXPECT_NE(c.reason.find("0.56x"), std::string::npos) << c.reason;
}

TEST(LayerChoice, MinSpeedupIsAThreshold) {
  FakeTimer t;
  const LinearShape s{4096, 1024, 1024};
  t.times[s] = {110.0, 100.0};  // 1.10x
  Fp8Options o = WithTokens(4096);
  o.min_speedup = 1.2;
  EXPECT_FALSE(ChooseLayerPrecision(s, o, &t).fp8);
  o.min_speedup = 1.05;
  EXPECT_TRUE(ChooseLayerPrecision(s, o, &t).fp8);
}

TEST(LayerChoice, ShapesNotMultipleOf16StayBf16WithoutTiming) {
  FakeTimer t;
  const Fp8Options o = WithTokens(4096);
  for (LinearShape s : {LinearShape{4096, 1000, 2048}, LinearShape{4096, 2048, 50257},
                        LinearShape{4100, 2048, 2048}}) {
    LayerChoice c = ChooseLayerPrecision(s, o, &t);
    EXPECT_FALSE(c.fp8);
    EXPECT_NE(c.reason.find("multiples of 16"), std::string::npos) << c.reason;
  }
  EXPECT_EQ(t.calls, 0);
}

TEST(LayerChoice, NoTimerOrUnknownTokensUsesFp8Unmeasured) {
  const LinearShape s{0, 2048, 2048};
  LayerChoice c = ChooseLayerPrecision(s, WithTokens(0), nullptr);
  EXPECT_TRUE(c.fp8);
  EXPECT_FALSE(c.measured);
  FakeTimer t;
  c = ChooseLayerPrecision(s, WithTokens(0), &t);
  EXPECT_TRUE(c.fp8);
  EXPECT_EQ(t.calls, 0);
}

TEST(LayerChoice, TimingErrorKeepsBf16) {
  FakeTimer t;  // knows no shape: every Time() fails
  LayerChoice c = ChooseLayerPrecision({1024, 1024, 1024}, WithTokens(1024), &t);
  EXPECT_FALSE(c.fp8);
  EXPECT_NE(c.reason.find("timing failed"), std::string::npos) << c.reason;
}

TEST(LayerChooser, MeasuresEachDistinctShapeOnce) {
  FakeTimer t;
  const LinearShape qkv{16384, 2048, 6144}, out{16384, 2048, 2048};
  t.times[qkv] = {300.0, 200.0};
  t.times[out] = {100.0, 120.0};
  LayerChooser chooser(WithTokens(16384), &t);
  for (int layer = 0; layer < 16; ++layer) {
    EXPECT_TRUE(chooser.Choose("blocks." + std::to_string(layer) + ".attn.qkv", qkv).fp8);
    EXPECT_FALSE(chooser.Choose("blocks." + std::to_string(layer) + ".attn.out", out).fp8);
  }
  EXPECT_EQ(t.calls, 2);
  EXPECT_EQ(chooser.measurements(), 2);
}


// Two ranks whose own timings disagree (FP8 faster on rank 0, slower on rank
// 1; or rank 1 unable to time) choose alike: both see the max of each side.
std::vector<LayerChoice> ChooseOnTwoRanks(const std::vector<FakeTimer>& timers, const LinearShape& shape) {
  comm::FakeWorld world(2, std::chrono::seconds(30));
  std::vector<LayerChoice> choice(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      auto comm = world.Join(r);
      auto max = [&comm](std::vector<double>& v) -> absl::Status {
        at::Tensor t = at::tensor(v, at::kDouble);
        KP_RETURN_IF_ERROR(comm->AllReduce(t, comm::ReduceOp::kMax));
        for (size_t i = 0; i < v.size(); ++i) v[i] = t[i].item<double>();
        return absl::OkStatus();
      };
      AgreedLayerTimer timer(std::make_unique<FakeTimer>(timers[r]), max);
      choice[r] = ChooseLayerPrecision(shape, WithTokens(shape.tokens), &timer);
    });
  }
  for (auto& t : ranks) t.join();
  return choice;
}

TEST(LayerChoice, RanksAgreeOnEveryLayer) {
  const LinearShape shape{16384, 2048, 2048};
  std::vector<FakeTimer> timers(2);
  timers[0].times[shape] = {100.0, 90.0};   // FP8 wins here
  timers[1].times[shape] = {104.0, 110.0};  // and loses there
  std::vector<LayerChoice> c = ChooseOnTwoRanks(timers, shape);
  for (int r = 0; r < 2; ++r) {
    EXPECT_FALSE(c[r].fp8) << "rank " << r;  // max: 104 vs 110
    EXPECT_DOUBLE_EQ(c[r].timing.bf16_us, 104.0);
    EXPECT_DOUBLE_EQ(c[r].timing.fp8_us, 110.0);
  }
  timers[1].times[shape] = {120.0, 95.0};  // FP8 wins on both: both keep it
  c = ChooseOnTwoRanks(timers, shape);
  EXPECT_TRUE(c[0].fp8 && c[1].fp8);

  timers[1].times.clear();  // rank 1 cannot time: nobody runs FP8
  c = ChooseOnTwoRanks(timers, shape);
  EXPECT_FALSE(c[0].fp8);
  EXPECT_FALSE(c[1].fp8);
  EXPECT_NE(c[0].reason.find("another rank"), std::string::npos) << c[0].reason;
}

}  // namespace
}  // namespace kp::fp8
