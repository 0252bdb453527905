#include "runtime/coordinator/recovery/recovery_set.h"

#include <gtest/gtest.h>

#include "runtime/coordinator/recovery/batch_config.h"

namespace kp::coordinator::recovery {
namespace {

constexpr char kYaml[] = "training:\n  micro_batch: 4\n  grad_accum: 1\nparallel:\n  dp: 4\n";

v1::JobStatus Job(int dp, bool elastic, int max_restarts, const std::string& min_dp = "") {
  v1::JobStatus j;
  j.set_job_id("j000001");
  j.set_generation(1);
  auto* s = j.mutable_spec();
  s->set_name("t");
  s->set_dp(dp);
  s->set_cp(1);
  s->set_elastic(elastic);
  s->set_max_restarts(max_restarts);
  s->set_config_yaml(kYaml);
  if (!min_dp.empty()) (*s->mutable_labels())[kMinDpLabel] = min_dp;
  return j;
}

FreeDevices Node(const std::string& id, std::vector<int> indices) {
  FreeDevices f{id, {}};
  for (int i : indices) {
    v1::Device d;
    d.set_index(i);
    d.set_kind(v1::DEVICE_KIND_CPU);
    f.devices.push_back(d);
  }
  return f;
}

Failure Killed(int64_t gen, int rank, const std::string& agent) {
  Failure f;
  f.generation = gen;
  f.rank = rank;
  f.agent_id = agent;
  f.exit_code = 137;
  return f;
}

TEST(ShapeOf, ReadsLayoutLabelAndBatch) {
  JobShape s = ShapeOf(Job(4, true, 3, "2").spec());
  EXPECT_EQ(s.dp, 4);
  EXPECT_EQ(s.min_dp, 2);
  EXPECT_EQ(s.micro_batch, 4);
  EXPECT_EQ(s.grad_accum, 1);
  EXPECT_EQ(ShapeOf(Job(4, true, 3).spec()).min_dp, 4);     // no label: never shrink
  EXPECT_EQ(ShapeOf(Job(4, true, 3, "x").spec()).min_dp, 4);  // junk: never shrink
  EXPECT_EQ(ShapeOf(Job(4, true, 3, "9").spec()).min_dp, 4);  // above dp: ignored
}

// JobSpec.min_dp is the elastic floor; the kp.min_dp label is its
// deprecated alias, read only when the field is unset (0).
TEST(ShapeOf, MinDpFieldWinsOverTheDeprecatedLabel) {
  v1::JobStatus job = Job(4, true, 3);
  job.mutable_spec()->set_min_dp(3);
  EXPECT_EQ(ShapeOf(job.spec()).min_dp, 3);
  (*job.mutable_spec()->mutable_labels())[kMinDpLabel] = "1";
  EXPECT_EQ(ShapeOf(job.spec()).min_dp, 3);
  job.mutable_spec()->set_min_dp(0);
  EXPECT_EQ(ShapeOf(job.spec()).min_dp, 1);
}

TEST(RecoverySet, ShrinkRewritesTheSpecKeepingTheGlobalBatch) {
  RecoverySet set({});
  v1::JobStatus job = Job(4, true, 3, "2");
  ASSERT_EQ(set.OnFault(job, Killed(1, 3, "b"), 0).action, Action::kWait);
  EXPECT_TRUE(set.Waiting(job.job_id()));
  Decision d = set.Place(job, {Node("a", {0, 1})}, 0);
  ASSERT_EQ(d.action, Action::kRestart) << d.reason;
  EXPECT_EQ(d.dp, 2);
  EXPECT_FALSE(set.Waiting(job.job_id()));
  auto spec = SpecFor(job.spec(), d);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->dp(), 2);
  auto b = ReadBatchShape(spec->config_yaml());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->micro_batch * b->grad_accum * spec->dp(), 4 * 1 * 4);
  // Full size: the spec is untouched.
  Decision full;
  full.action = Action::kRestart;
  full.dp = 4;
  EXPECT_EQ(SpecFor(job.spec(), full)->config_yaml(), kYaml);
}

TEST(RecoverySet, RestartsSoFarComeFromTheJobStatus) {
  RecoverySet set({});
  v1::JobStatus job = Job(1, true, 2);
  job.set_restarts(2);  // e.g. after a coordinator restart
  Decision d = set.OnFault(job, Killed(3, 0, "a"), 0);
  EXPECT_EQ(d.action, Action::kFail);
  EXPECT_NE(d.reason.find("gave up after 2 restarts"), std::string::npos) << d.reason;
}

TEST(RecoverySet, StragglerDeviceIsExcludedAtTheNextRestart) {
  RecoveryConfig config;
  config.exclude_stragglers = true;
  config.straggler.window = 3;
  config.straggler.factor = 1.5;
  RecoverySet set(config);
  v1::JobStatus job = Job(3, true, 3);
  set.OnPlaced(job, {{0, "a#0"}, {1, "a#1"}, {2, "a#2"}});
  std::vector<straggler::StragglerEvent> events;
  for (int i = 0; i <= 3; ++i) {
    const int64_t t = 1'000'000LL * i;
    for (int r = 0; r < 3; ++r) {
      auto ev = set.OnProgress(job, r, (r == 1 ? 3 : 10) * i, t);
      events.insert(events.end(), ev.begin(), ev.end());
    }
  }
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].rank, 1);
  EXPECT_EQ(events[0].device, "a#1");
  EXPECT_NE(set.PrometheusText().find("kp_rank_straggler{job=\"j000001\",rank=\"1\"} 1"), std::string::npos)
      << set.PrometheusText();
  ASSERT_EQ(set.OnFault(job, Killed(1, 0, "a"), 0).action, Action::kWait);
  // Three devices but one is the straggler's: wait; a fourth lets it run.
  EXPECT_EQ(set.Place(job, {Node("a", {0, 1, 2})}, 0).action, Action::kWait);
  Decision d = set.Place(job, {Node("a", {0, 1, 2, 3})}, 0);
  ASSERT_EQ(d.action, Action::kRestart) << d.reason;
  for (const auto& s : d.slots) EXPECT_NE(s.device.index(), 1);
}

TEST(RecoverySet, WithoutExclusionStragglersStayUsable) {
  RecoveryConfig config;
  config.straggler.window = 1;
  RecoverySet set(config);
  v1::JobStatus job = Job(2, true, 3);
  set.OnPlaced(job, {{0, "a#0"}, {1, "a#1"}});
  set.OnFault(job, Killed(1, 0, "a"), 0);
  EXPECT_EQ(set.Place(job, {Node("a", {0, 1})}, 0).action, Action::kRestart);
}

TEST(RecoverySet, ProgressOfAnotherGenerationIsIgnoredAndForgetDropsState) {
  RecoverySet set({});
  v1::JobStatus job = Job(2, true, 3);
  set.OnPlaced(job, {{0, "a#0"}, {1, "a#1"}});
  v1::JobStatus later = job;
  later.set_generation(2);
  EXPECT_TRUE(set.OnProgress(later, 0, 5, 10).empty());
  set.OnFault(job, Killed(1, 0, "a"), 0);
  EXPECT_TRUE(set.Waiting(job.job_id()));
  EXPECT_NE(set.PrometheusText().find("kp_jobs_waiting_for_replacement 1"), std::string::npos);
  set.Forget(job.job_id());
  EXPECT_FALSE(set.Waiting(job.job_id()));
  EXPECT_NE(set.PrometheusText().find("kp_jobs_waiting_for_replacement 0"), std::string::npos);
}

}  // namespace
}  // namespace kp::coordinator::recovery
