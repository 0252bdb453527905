#include "runtime/coordinator/straggler/straggler_detector.h"

#include <gtest/gtest.h>

#include <random>

namespace kp::coordinator::straggler {
namespace {

// Step times around `base` with +-10% noise.
double Noisy(std::mt19937& rng, double base) {
  return base * std::uniform_real_distribution<double>(0.9, 1.1)(rng);
}

TEST(StragglerDetector, PersistentlySlowRankIsFlaggedOnceThenRecovers) {
  std::mt19937 rng(7);
  StragglerDetector d({.factor = 1.5, .window = 8, .min_ranks = 2});
  for (int r = 0; r < 4; ++r) d.SetDevice(r, "node-a#" + std::to_string(r));
  std::vector<StragglerEvent> flagged;
  for (int step = 0; step < 8; ++step) {
    for (int r = 0; r < 4; ++r) d.Observe(r, Noisy(rng, r == 2 ? 0.2 : 0.1));
    auto ev = d.Evaluate();
    flagged.insert(flagged.end(), ev.begin(), ev.end());
  }
  ASSERT_EQ(flagged.size(), 1u);
  EXPECT_EQ(flagged[0].rank, 2);
  EXPECT_TRUE(flagged[0].straggler);
  EXPECT_EQ(flagged[0].device, "node-a#2");
  EXPECT_NEAR(flagged[0].step_time_s / flagged[0].median_s, 2.0, 0.5);
  EXPECT_NE(flagged[0].message.find("(straggler)"), std::string::npos) << flagged[0].message;
  EXPECT_TRUE(d.IsStraggler(2));
  EXPECT_EQ(d.StragglerDevices(), std::vector<std::string>{"node-a#2"});
  // More slow steps: no repeated event.
  for (int r = 0; r < 4; ++r) d.Observe(r, Noisy(rng, r == 2 ? 0.2 : 0.1));
  EXPECT_TRUE(d.Evaluate().empty());
  // It speeds up: once its window median is normal again, one recovery event.
  std::vector<StragglerEvent> recovered;
  for (int step = 0; step < 8; ++step) {
    for (int r = 0; r < 4; ++r) d.Observe(r, Noisy(rng, 0.1));
    auto ev = d.Evaluate();
    recovered.insert(recovered.end(), ev.begin(), ev.end());
  }
  ASSERT_EQ(recovered.size(), 1u);
  EXPECT_FALSE(recovered[0].straggler);
  EXPECT_FALSE(d.IsStraggler(2));
}

TEST(StragglerDetector, OccasionalSlowStepsAreNotStragglers) {
  std::mt19937 rng(11);
  StragglerDetector d({.factor = 1.5, .window = 8, .min_ranks = 2});
  for (int step = 0; step < 40; ++step) {
    for (int r = 0; r < 4; ++r) {
      // Rank 1 has a 5x slow step every 5th step (a checkpoint write).
      d.Observe(r, Noisy(rng, 0.1) * (r == 1 && step % 5 == 0 ? 5 : 1));
    }
    EXPECT_TRUE(d.Evaluate().empty()) << "step " << step;
  }
}

TEST(StragglerDetector, NoVerdictBeforeAFullWindowOrWithOneRank) {
  StragglerDetector d({.factor = 1.5, .window = 4, .min_ranks = 2});
  for (int i = 0; i < 3; ++i) {
    d.Observe(0, 0.1);
    d.Observe(1, 1.0);
  }
  EXPECT_TRUE(d.Evaluate().empty());
  StragglerDetector single({.factor = 1.5, .window = 1, .min_ranks = 2});
  single.Observe(0, 5.0);
  EXPECT_TRUE(single.Evaluate().empty());
}

TEST(StragglerDetector, StepTimesFromProgressReports) {
  StragglerDetector d({.factor = 1.5, .window = 3, .min_ranks = 2});
  // Rank 0 advances 10 steps per second, rank 1 4 steps per second.
  for (int i = 0; i <= 3; ++i) {
    d.ObserveProgress(0, 10 * i, 1'000'000LL * i);
    d.ObserveProgress(1, 4 * i, 1'000'000LL * i);
    d.ObserveProgress(1, 4 * i, 1'000'000LL * i + 500'000);  // no new step: ignored
  }
  EXPECT_NEAR(*d.StepTime(0), 0.1, 1e-9);
  EXPECT_NEAR(*d.StepTime(1), 0.25, 1e-9);
  auto ev = d.Evaluate();
  // Median of {0.1, 0.25} is 0.175; 0.25 < 1.5 x 0.175: with two ranks the
  // median sits between them, so flagging needs a larger gap.
  EXPECT_TRUE(ev.empty());
  StragglerDetector tight({.factor = 1.2, .window = 3, .min_ranks = 2});
  for (int i = 0; i <= 3; ++i) {
    tight.ObserveProgress(0, 10 * i, 1'000'000LL * i);
    tight.ObserveProgress(1, 4 * i, 1'000'000LL * i);
  }
  ev = tight.Evaluate();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].rank, 1);
}

TEST(StragglerDetector, PrometheusSamples) {
  StragglerDetector d({.factor = 1.5, .window = 1, .min_ranks = 2});
  d.Observe(0, 0.1);
  d.Observe(1, 0.1);
  d.Observe(2, 0.5);
  d.Evaluate();
  const std::string text = d.PrometheusSamples("j000001");
  EXPECT_NE(text.find("kp_rank_straggler{job=\"j000001\",rank=\"2\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kp_rank_straggler{job=\"j000001\",rank=\"0\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kp_rank_step_time_seconds{job=\"j000001\",rank=\"2\"} 0.5\n"), std::string::npos) << text;
  EXPECT_NE(StragglerDetector::PrometheusHeader().find("# TYPE kp_rank_straggler gauge"), std::string::npos);
}

// Synchronous dp: progress advances at the slowest rank's pace on every
// rank, so progress-derived times are equal; the measured compute times
// name the slow rank, and a heartbeat repeating a step adds nothing.
TEST(StragglerDetector, MeasuredComputeTimesNameTheSlowRankUnderSyncDp) {
  std::mt19937 rng(5);
  StragglerDetector d({.factor = 1.5, .window = 4, .min_ranks = 2});
  d.SetDevice(1, "node-1#0");
  std::vector<StragglerEvent> events;
  for (int step = 1; step <= 6; ++step) {
    for (int r = 0; r < 3; ++r) {
      d.ObserveProgress(r, step, 300'000LL * step);  // lockstep: all equal
      d.ObserveMeasured(r, step, Noisy(rng, r == 1 ? 0.25 : 0.04));
      d.ObserveMeasured(r, step, 9.0);  // the same step again: ignored
      d.ObserveProgress(r, step + 1, 300'000LL * step + 1);  // ignored once measured
    }
    auto ev = d.Evaluate();
    events.insert(events.end(), ev.begin(), ev.end());
  }
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].rank, 1);
  EXPECT_EQ(events[0].device, "node-1#0");
  EXPECT_NEAR(*d.StepTime(1), 0.25, 0.03);
  EXPECT_NEAR(*d.StepTime(0), 0.04, 0.005);  // no 9.0, no progress-derived 0.3
  EXPECT_FALSE(d.IsStraggler(0));
  EXPECT_FALSE(d.IsStraggler(2));
}

// Two ranks: the median lies between them, so the slow one must be more
// than factor / (2 - factor) = 3x the fast one (factor 1.5) to be flagged.
TEST(StragglerDetector, TwoRanksNeedAWideGap) {
  StragglerDetector near({.factor = 1.5, .window = 2, .min_ranks = 2});
  StragglerDetector far({.factor = 1.5, .window = 2, .min_ranks = 2});
  for (int step = 0; step < 2; ++step) {
    near.ObserveMeasured(0, step, 0.1);
    near.ObserveMeasured(1, step, 0.28);
    far.ObserveMeasured(0, step, 0.1);
    far.ObserveMeasured(1, step, 0.32);
  }
  EXPECT_TRUE(near.Evaluate().empty());
  auto ev = far.Evaluate();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].rank, 1);
}

TEST(Median, OddAndEven) {
  EXPECT_DOUBLE_EQ(Median({3, 1, 2}), 2);
  EXPECT_DOUBLE_EQ(Median({4, 1, 3, 2}), 2.5);
}

}  // namespace
}  // namespace kp::coordinator::straggler
