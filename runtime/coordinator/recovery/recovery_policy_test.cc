#include "runtime/coordinator/recovery/recovery_policy.h"

#include <gtest/gtest.h>

#include "runtime/common/clock.h"

namespace kp::coordinator::recovery {
namespace {

constexpr int64_t kSecond = 1'000'000;

v1::Device Dev(int index) {
  v1::Device d;
  d.set_index(index);
  d.set_kind(v1::DEVICE_KIND_CPU);
  return d;
}

FreeDevices Node(const std::string& id, int n) {
  FreeDevices f{id, {}};
  for (int i = 0; i < n; ++i) f.devices.push_back(Dev(i));
  return f;
}

Failure Exit(int64_t generation, int rank, int code, const std::string& agent = "a") {
  Failure f;
  f.kind = FailureKind::kWorkerExit;
  f.generation = generation;
  f.rank = rank;
  f.exit_code = code;
  f.agent_id = agent;
  return f;
}

RecoveryOptions Opts(int64_t deadline = 30 * kSecond) {
  RecoveryOptions o;
  o.replacement_deadline_micros = deadline;
  return o;
}

JobShape Shape(int dp, int cp, int max_restarts, bool elastic = false, int min_dp = 1) {
  JobShape s;
  s.dp = dp;
  s.cp = cp;
  s.max_restarts = max_restarts;
  s.elastic = elastic;
  s.min_dp = min_dp;
  s.micro_batch = 8;
  s.grad_accum = 1;
  return s;
}

TEST(RecoveryPolicy, WorkerKilledRestartsAtFullSizeOnTheSameDevices) {
  FakeClock clock;
  JobRecovery r(Shape(2, 1, 3), Opts());
  Decision d = r.OnFailure(Exit(1, 1, 137), clock.NowMicros());
  ASSERT_EQ(d.action, Action::kWait) << d.reason;
  EXPECT_NE(d.reason.find("restart 1 of 3"), std::string::npos) << d.reason;
  EXPECT_NE(d.reason.find("SIGKILL"), std::string::npos) << d.reason;
  d = r.Place(clock.NowMicros(), {Node("a", 2)});
  ASSERT_EQ(d.action, Action::kRestart) << d.reason;
  EXPECT_EQ(d.dp, 2);
  EXPECT_EQ(d.slots.size(), 2u);
  EXPECT_EQ(d.batch.micro_batch, 8);
  EXPECT_EQ(r.restarts(), 1);
  EXPECT_FALSE(r.waiting());
}

TEST(RecoveryPolicy, OtherRanksOfABrokenGenerationAreNotCountedTwice) {
  JobRecovery r(Shape(4, 1, 1), Opts());
  ASSERT_EQ(r.OnFailure(Exit(1, 2, 137), 0).action, Action::kWait);
  // The survivors' collectives fail next: same generation, history only.
  EXPECT_EQ(r.OnFailure(Exit(1, 0, 1), 10).action, Action::kIgnore);
  EXPECT_EQ(r.OnFailure(Exit(1, 3, 75), 20).action, Action::kIgnore);
  ASSERT_EQ(r.Place(30, {Node("a", 4)}).action, Action::kRestart);
  EXPECT_EQ(r.restarts(), 1);
  EXPECT_EQ(r.history().size(), 3u);
}

TEST(RecoveryPolicy, CrashLoopEndsFailedWithTheHistoryOfCauses) {
  JobRecovery r(Shape(1, 1, 2), Opts());
  const int codes[] = {137, 1, 139};
  Decision d;
  for (int g = 1; g <= 3; ++g) {
    d = r.OnFailure(Exit(g, 0, codes[g - 1]), g * kSecond);
    if (d.action == Action::kFail) break;
    ASSERT_EQ(d.action, Action::kWait);
    ASSERT_EQ(r.Place(g * kSecond, {Node("a", 1)}).action, Action::kRestart);
  }
  ASSERT_EQ(d.action, Action::kFail);
  EXPECT_EQ(r.restarts(), 2);
  EXPECT_NE(d.reason.find("gave up after 2 restarts"), std::string::npos) << d.reason;
  EXPECT_NE(d.reason.find("3 faults"), std::string::npos) << d.reason;
  for (const char* cause : {"generation 1: rank 0 on a exited with code 137 (SIGKILL)", "generation 2: rank 0 on a exited with code 1",
                            "generation 3: rank 0 on a exited with code 139 (SIGSEGV)"}) {
    EXPECT_NE(d.reason.find(cause), std::string::npos) << cause << " missing from: " << d.reason;
  }
}

TEST(RecoveryPolicy, MaxRestartsZeroUsesTheDefaultAndZeroDefaultFailsAtOnce) {
  JobRecovery none(Shape(1, 1, 0), Opts());
  Decision d = none.OnFailure(Exit(1, 0, 1), 0);
  EXPECT_EQ(d.action, Action::kFail);
  EXPECT_NE(d.reason.find("max_restarts = 0"), std::string::npos) << d.reason;
  RecoveryOptions o = Opts();
  o.default_max_restarts = 1;
  JobRecovery one(Shape(1, 1, 0), o);
  EXPECT_EQ(one.max_restarts(), 1);
  EXPECT_EQ(one.OnFailure(Exit(1, 0, 1), 0).action, Action::kWait);
}

TEST(RecoveryPolicy, BadConfigExitIsPermanent) {
  JobRecovery r(Shape(2, 1, 5), Opts());
  Decision d = r.OnFailure(Exit(1, 1, kExitBadConfig), 0);
  EXPECT_EQ(d.action, Action::kFail);
  EXPECT_NE(d.reason.find("cannot fix"), std::string::npos) << d.reason;
  EXPECT_EQ(r.restarts(), 0);
}

TEST(RecoveryPolicy, AgentLostWaitsForAReplacementThenFailsAtTheDeadline) {
  FakeClock clock;
  JobRecovery r(Shape(2, 1, 3), Opts(30 * kSecond));
  Failure f;
  f.kind = FailureKind::kAgentLost;
  f.generation = 1;
  f.agent_id = "b";
  ASSERT_EQ(r.OnFailure(f, clock.NowMicros()).action, Action::kWait);
  // Only agent a (one device) is left; the job is not elastic.
  Decision d = r.Place(clock.NowMicros(), {Node("a", 1)});
  ASSERT_EQ(d.action, Action::kWait) << d.reason;
  EXPECT_EQ(d.wait_until_micros, 30 * kSecond);
  EXPECT_NE(d.reason.find("needs 2 devices, 1 usable"), std::string::npos) << d.reason;
  clock.Advance(29 * kSecond);
  EXPECT_EQ(r.Place(clock.NowMicros(), {Node("a", 1)}).action, Action::kWait);
  clock.Advance(1 * kSecond);
  d = r.Place(clock.NowMicros(), {Node("a", 1)});
  ASSERT_EQ(d.action, Action::kFail);
  EXPECT_NE(d.reason.find("no replacement within 30.0 s"), std::string::npos) << d.reason;
  EXPECT_NE(d.reason.find("agent b lost"), std::string::npos) << d.reason;
}

TEST(RecoveryPolicy, ReplacementAgentBeforeTheDeadlineRestartsAtFullSize) {
  FakeClock clock;
  JobRecovery r(Shape(2, 1, 3), Opts(30 * kSecond));
  Failure f;
  f.kind = FailureKind::kAgentLost;
  f.generation = 1;
  f.agent_id = "b";
  r.OnFailure(f, clock.NowMicros());
  EXPECT_EQ(r.Place(clock.NowMicros(), {Node("a", 1)}).action, Action::kWait);
  clock.Advance(10 * kSecond);
  Decision d = r.Place(clock.NowMicros(), {Node("a", 1), Node("c", 1)});
  ASSERT_EQ(d.action, Action::kRestart) << d.reason;
  EXPECT_EQ(d.dp, 2);
  EXPECT_EQ(d.slots[0].agent_id, "a");
  EXPECT_EQ(d.slots[1].agent_id, "c");
}

TEST(RecoveryPolicy, ElasticShrinksDpKeepingCpGroupsAndGlobalBatch) {
  // dp=4 x cp=2 on 8 devices; a node of 2 is lost: 6 left -> dp 3 x cp 2.
  JobShape s = Shape(4, 2, 3, /*elastic=*/true, /*min_dp=*/2);
  s.micro_batch = 6;
  s.grad_accum = 1;  // global batch 24
  JobRecovery r(s, Opts());
  Failure f;
  f.kind = FailureKind::kAgentLost;
  f.generation = 1;
  f.agent_id = "d";
  r.OnFailure(f, 0);
  Decision d = r.Place(0, {Node("a", 2), Node("b", 2), Node("c", 2)});
  ASSERT_EQ(d.action, Action::kRestart) << d.reason;
  EXPECT_EQ(d.dp, 3);
  EXPECT_EQ(d.cp, 2);
  ASSERT_EQ(d.slots.size(), 6u);
  // A cp group (ranks 2g, 2g+1) shares one node.
  for (int g = 0; g < 3; ++g) EXPECT_EQ(d.slots[2 * g].agent_id, d.slots[2 * g + 1].agent_id);
  EXPECT_EQ(d.batch.micro_batch * d.batch.grad_accum * d.dp, 24);
  EXPECT_NE(d.reason.find("shrunk dp 4 -> 3"), std::string::npos) << d.reason;
}

TEST(RecoveryPolicy, ElasticDoesNotShrinkBelowMinDpOrWhenTheBatchCannotStayFixed) {
  JobShape s = Shape(4, 1, 3, /*elastic=*/true, /*min_dp=*/3);
  s.micro_batch = 2;
  s.grad_accum = 1;  // global 8: dp 3 does not divide it, dp 2 is below min_dp
  JobRecovery r(s, Opts(5 * kSecond));
  r.OnFailure(Exit(1, 0, 137), 0);
  Decision d = r.Place(0, {Node("a", 3)});
  ASSERT_EQ(d.action, Action::kWait) << d.reason;
  EXPECT_NE(d.reason.find("cannot shrink to dp >= min_dp 3"), std::string::npos) << d.reason;
  EXPECT_EQ(r.Place(5 * kSecond, {Node("a", 3)}).action, Action::kFail);
}

TEST(RecoveryPolicy, NonElasticNeverShrinks) {
  JobRecovery r(Shape(4, 1, 3), Opts());
  r.OnFailure(Exit(1, 0, 137), 0);
  EXPECT_EQ(r.Place(0, {Node("a", 2)}).action, Action::kWait);
}

TEST(RecoveryPolicy, ExcludedDevicesAreNotUsed) {
  JobRecovery r(Shape(2, 1, 3), Opts());
  r.ExcludeDevice("a", 0, "straggler: 2.1x the median step time");
  r.OnFailure(Exit(1, 0, 137), 0);
  EXPECT_EQ(r.Place(0, {Node("a", 2)}).action, Action::kWait);
  Decision d = r.Place(0, {Node("a", 3)});
  ASSERT_EQ(d.action, Action::kRestart);
  for (const auto& s : d.slots) EXPECT_NE(s.device.index(), 0);
  EXPECT_NE(r.HistoryText().find("excluded a#0: straggler"), std::string::npos) << r.HistoryText();
}

TEST(RecoveryPolicy, RestartWaitsForTheSettlePeriod) {
  RecoveryOptions o = Opts();
  o.settle_micros = 2 * kSecond;
  JobRecovery r(Shape(2, 1, 3), o);
  r.OnFailure(Exit(1, 0, 1), 10 * kSecond);
  Decision d = r.Place(11 * kSecond, {Node("a", 2)});
  EXPECT_EQ(d.action, Action::kWait);
  EXPECT_EQ(d.reason, "settling after the fault");
  EXPECT_EQ(r.waiting_since(), 10 * kSecond);
  EXPECT_EQ(r.Place(12 * kSecond, {Node("a", 2)}).action, Action::kRestart);
}

TEST(RecoveryPolicy, FirstPlacementWaitsWithoutDeadlineAndCountsNoRestart) {
  JobRecovery r(Shape(2, 1, 3), Opts(1));
  Decision d = r.Place(100 * kSecond, {Node("a", 1)});
  EXPECT_EQ(d.action, Action::kWait);
  d = r.Place(200 * kSecond, {Node("a", 2)});
  EXPECT_EQ(d.action, Action::kRestart);
  EXPECT_EQ(r.restarts(), 0);
}

TEST(ShrinkBatch, KeepsTheGlobalBatch) {
  auto b = ShrinkBatch({8, 1}, 4, 2);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->micro_batch, 8);
  EXPECT_EQ(b->grad_accum, 2);
  b = ShrinkBatch({8, 2}, 3, 2);  // global 48 -> 24 per rank: mb 8 x accum 3
  ASSERT_TRUE(b);
  EXPECT_EQ(b->micro_batch * b->grad_accum, 24);
  EXPECT_EQ(b->micro_batch, 8);
  b = ShrinkBatch({6, 1}, 4, 3);  // global 24 -> 8 per rank: mb 6 does not divide 8 -> 4 x 2
  ASSERT_TRUE(b);
  EXPECT_EQ(b->micro_batch, 4);
  EXPECT_EQ(b->grad_accum, 2);
  EXPECT_FALSE(ShrinkBatch({2, 1}, 4, 3));  // 8 samples over 3 ranks
  EXPECT_FALSE(ShrinkBatch({0, 1}, 4, 2));
}

TEST(DescribeFailure, NamesTheCause) {
  Failure f = Exit(3, 1, kExitCollectiveHung, "node-b");
  EXPECT_EQ(DescribeFailure(f),
            "generation 3: rank 1 on node-b exited with code 75 (collective timed out: watchdog abort)");
  f.kind = FailureKind::kCollectiveTimeout;
  f.message = "all_reduce of 4096 floats, 30 s";
  EXPECT_EQ(DescribeFailure(f),
            "generation 3: rank 1 on node-b reported a collective timeout: all_reduce of 4096 floats, 30 s");
}

}  // namespace
}  // namespace kp::coordinator::recovery
