#include "runtime/snapshot/resume_plan.h"

#include <gtest/gtest.h>

namespace kp::snapshot {
namespace {

v1::SnapshotHolding Holding(const std::string& job, int rank, int64_t step, int64_t gen = 1, int world = 2) {
  v1::SnapshotHolding h;
  h.mutable_key()->set_job_id(job);
  h.mutable_key()->set_rank(rank);
  h.mutable_key()->set_step(step);
  h.mutable_key()->set_generation(gen);
  h.mutable_key()->set_world_size(world);
  h.set_bytes(1000);
  return h;
}

AgentView Agent(const std::string& id, std::vector<v1::SnapshotHolding> holdings = {}, bool usable = true) {
  return AgentView{id, id + ":7000", usable, std::move(holdings)};
}

std::vector<v1::Assignment> Placed(const std::vector<std::string>& agents, int64_t generation = 1,
                                   bool resume = false) {
  std::vector<v1::Assignment> out;
  for (size_t r = 0; r < agents.size(); ++r) {
    v1::Assignment a;
    a.set_job_id("j");
    a.set_rank(static_cast<int>(r));
    a.set_world_size(static_cast<int>(agents.size()));
    a.set_agent_id(agents[r]);
    a.set_generation(generation);
    a.set_resume(resume);
    out.push_back(a);
  }
  return out;
}

TEST(SnapshotTargets, OwnAgentThenAnotherNodesAgent) {
  const std::vector<AgentView> agents = {Agent("n0"), Agent("n1"), Agent("n2")};
  auto placed = Placed({"n0", "n0", "n1", "n2"});
  EXPECT_EQ(TargetsFor(0, placed, agents), (std::vector<std::string>{"n0:7000", "n1:7000"}));  // skips rank 1 (same node)
  EXPECT_EQ(TargetsFor(1, placed, agents), (std::vector<std::string>{"n0:7000", "n1:7000"}));
  EXPECT_EQ(TargetsFor(2, placed, agents), (std::vector<std::string>{"n1:7000", "n2:7000"}));
  EXPECT_EQ(TargetsFor(3, placed, agents), (std::vector<std::string>{"n2:7000", "n0:7000"}));
  // Every rank on one node: the next agent by id that is usable.
  std::vector<AgentView> others = {Agent("n0"), Agent("n1", {}, /*usable=*/false), Agent("n2")};
  EXPECT_EQ(TargetsFor(0, Placed({"n0", "n0"}), others), (std::vector<std::string>{"n0:7000", "n2:7000"}));
  // An agent without a snapshot service is skipped.
  std::vector<AgentView> bare = {Agent("n0"), AgentView{"n1", "", true, {}}};
  EXPECT_EQ(TargetsFor(0, Placed({"n0", "n1"}), bare), (std::vector<std::string>{"n0:7000"}));
}

TEST(ChooseResume, NewestStepWhoseEveryRankSurvivesOnAUsableAgent) {
  // Node-1 died: what it held is gone. Node-0 holds rank 0's own copies and
  // rank 1's peer copies; the newest step 14 of rank 1 never arrived whole.
  std::vector<AgentView> agents = {
      Agent("n0", {Holding("j", 0, 12), Holding("j", 0, 14), Holding("j", 1, 12)}),
      Agent("n1", {}),  // came back empty
      Agent("n2", {Holding("j", 1, 14)}, /*usable=*/false),  // not heard from since the fault
  };
  auto c = ChooseResume("j", 2, agents);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->step, 12);
  EXPECT_EQ(c->address_by_rank, (std::vector<std::string>{"n0:7000", "n0:7000"}));
  agents[2].usable = true;
  c = ChooseResume("j", 2, agents);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->step, 14);
  EXPECT_EQ(c->address_by_rank, (std::vector<std::string>{"n0:7000", "n2:7000"}));
  // The rank's new agent is preferred as its source when it holds a copy.
  agents[1].holdings = {Holding("j", 1, 14)};
  c = ChooseResume("j", 2, agents, {"n0", "n1"});
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->address_by_rank[1], "n1:7000");
}

TEST(ChooseResume, NoCompleteSetOtherJobsOtherWorldSizesOrMixedGenerations) {
  EXPECT_FALSE(ChooseResume("j", 2, {Agent("n0", {Holding("j", 0, 14)})}).has_value());
  EXPECT_FALSE(ChooseResume("j", 2, {Agent("n0", {Holding("k", 0, 14), Holding("k", 1, 14)})}).has_value());
  // Taken with 4 ranks: does not fit a 2-rank generation (elastic shrink).
  EXPECT_FALSE(
      ChooseResume("j", 2, {Agent("n0", {Holding("j", 0, 14, 1, 4), Holding("j", 1, 14, 1, 4)})}).has_value());
  // Rank 0 from generation 1, rank 1 from generation 2 at the same step: not one state.
  EXPECT_FALSE(ChooseResume("j", 2, {Agent("n0", {Holding("j", 0, 14, 1), Holding("j", 1, 14, 2)})}).has_value());
  EXPECT_FALSE(ChooseResume("j", 0, {}).has_value());
}

TEST(ApplySnapshotPlan, FillsCadenceTargetsAndTheResumePoint) {
  v1::JobSpec spec;
  spec.mutable_checkpoint()->set_snapshot_every_steps(2);
  std::vector<AgentView> agents = {Agent("n0", {Holding("j", 0, 14), Holding("j", 1, 14)}), Agent("n1")};
  auto first = Placed({"n0", "n1"}, /*generation=*/1);
  EXPECT_EQ(ApplySnapshotPlan(spec, agents, &first), "");
  EXPECT_EQ(first[1].snapshot_every_steps(), 2);
  EXPECT_EQ(first[1].snapshot_targets_size(), 2);
  EXPECT_TRUE(first[0].resume_snapshot_address().empty());  // generation 1 starts fresh

  auto restart = Placed({"n0", "n1"}, /*generation=*/2, /*resume=*/true);
  const std::string why = ApplySnapshotPlan(spec, agents, &restart);
  EXPECT_NE(why.find("step 14"), std::string::npos) << why;
  for (const auto& a : restart) {
    EXPECT_EQ(a.resume_snapshot_address(), "n0:7000");
    EXPECT_EQ(a.resume_snapshot_step(), 14);
  }
  agents[0].holdings.pop_back();
  auto fallback = Placed({"n0", "n1"}, 2, true);
  EXPECT_NE(ApplySnapshotPlan(spec, agents, &fallback).find("disk checkpoint"), std::string::npos);
  EXPECT_TRUE(fallback[0].resume_snapshot_address().empty());

  spec.mutable_checkpoint()->set_snapshot_every_steps(0);  // off: nothing set
  auto off = Placed({"n0", "n1"}, 2, true);
  EXPECT_EQ(ApplySnapshotPlan(spec, agents, &off), "");
  EXPECT_EQ(off[0].snapshot_targets_size(), 0);
  EXPECT_TRUE(off[0].resume_snapshot_address().empty());
}

}  // namespace
}  // namespace kp::snapshot
