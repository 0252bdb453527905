// In-memory snapshots through the Coordinator, with a FakeClock and fake
// agents' heartbeats (no gRPC, no processes): each rank is told to send its
// snapshots to its own agent and to the other node's; after node-1 is lost,
// generation 2 is told to resume from the newest step whose every rank
// survives on node-0 (or from disk when none does).
#include <gtest/gtest.h>

#include "runtime/coordinator/coordinator.h"

namespace kp::coordinator {
namespace {

constexpr int64_t kSecond = 1'000'000;

v1::JobSpec Spec(int64_t snapshot_every) {
  v1::JobSpec s;
  s.set_name("snap");
  s.set_config_yaml("training:\n  micro_batch: 4\n  grad_accum: 1\nparallel:\n  dp: 2\n");
  s.set_dp(2);
  s.set_cp(1);
  s.set_steps(100);
  s.set_elastic(true);
  s.set_max_restarts(3);
  s.mutable_checkpoint()->set_every_steps(10);
  s.mutable_checkpoint()->set_snapshot_every_steps(snapshot_every);
  return s;
}

v1::AgentInfo Agent(const std::string& id) {
  v1::AgentInfo info;
  info.set_agent_id(id);
  info.set_snapshot_address(id + ":7000");
  auto* d = info.add_devices();
  d->set_index(0);
  d->set_kind(v1::DEVICE_KIND_CPU);
  return info;
}

v1::SnapshotHolding Held(const std::string& job, int rank, int64_t step) {
  v1::SnapshotHolding h;
  h.mutable_key()->set_job_id(job);
  h.mutable_key()->set_rank(rank);
  h.mutable_key()->set_step(step);
  h.mutable_key()->set_generation(1);
  h.mutable_key()->set_world_size(2);
  h.set_bytes(1000);
  return h;
}

v1::WorkerReport Report(const v1::Assignment& a, v1::WorkerState state, int exit_code = 0) {
  v1::WorkerReport r;
  r.set_job_id(a.job_id());
  r.set_generation(a.generation());
  r.set_rank(a.rank());
  r.set_state(state);
  r.set_exit_code(exit_code);
  return r;
}

class CoordinatorSnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = NewMemoryStateStore();
    CoordinatorOptions o;
    o.heartbeat_timeout_micros = 5 * kSecond;
    o.recovery.policy.replacement_deadline_micros = 60 * kSecond;
    c_ = std::move(*Coordinator::Create(store_.get(), &clock_, o));
    ASSERT_TRUE(c_->RegisterAgent(Agent("n0")).ok());
    ASSERT_TRUE(c_->RegisterAgent(Agent("n1")).ok());
  }
  v1::HeartbeatResponse Beat(const std::string& agent, std::vector<v1::WorkerReport> reports = {},
                             std::vector<v1::SnapshotHolding> held = {}) {
    v1::HeartbeatRequest req;
    req.set_agent_id(agent);
    for (auto& r : reports) *req.add_workers() = r;
    for (auto& h : held) *req.add_snapshots() = h;
    auto resp = c_->Heartbeat(req);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return resp.ok() ? *resp : v1::HeartbeatResponse{};
  }
  // Generation 1 runs (rank r on node r); then node-1 dies holding whatever
  // it held, node-0 reports `held_on_n0`, rank 0's collective fails; node-1
  // comes back empty. Returns generation 2's assignments.
  std::vector<v1::Assignment> LoseNode1(const std::string& job, const std::vector<v1::SnapshotHolding>& held_on_n0) {
    auto a0 = Beat("n0").assignments();
    auto a1 = Beat("n1").assignments();
    EXPECT_EQ(a0.size(), 1u);
    EXPECT_EQ(a1.size(), 1u);
    if (a0.size() != 1 || a1.size() != 1) return {};
    g1_ = {a0[0], a1[0]};
    Beat("n0", {Report(a0[0], v1::WORKER_STATE_RUNNING)});
    Beat("n1", {Report(a1[0], v1::WORKER_STATE_RUNNING)}, {Held(job, 1, 14), Held(job, 0, 14)});
    clock_.Advance(kSecond / 2);
    Beat("n0", {Report(a0[0], v1::WORKER_STATE_EXITED, 1)}, held_on_n0);
    EXPECT_EQ(c_->GetJob(job)->state(), v1::JOB_STATE_QUEUED);
    clock_.Advance(2 * kSecond + 1);
    Beat("n0", {}, held_on_n0);
    c_->Tick();
    EXPECT_TRUE(Beat("n0", {}, held_on_n0).assignments().empty()) << "placed without node-1";
    EXPECT_TRUE(c_->RegisterAgent(Agent("n1")).ok());  // back, with empty memory
    auto b1 = Beat("n1").assignments();
    auto b0 = Beat("n0", {}, held_on_n0).assignments();
    EXPECT_EQ(b0.size(), 1u);
    EXPECT_EQ(b1.size(), 1u);
    if (b0.size() != 1 || b1.size() != 1) return {};
    std::vector<v1::Assignment> g2 = {b0[0], b1[0]};
    if (g2[0].rank() != 0) std::swap(g2[0], g2[1]);
    return g2;
  }

  FakeClock clock_{kSecond};
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<Coordinator> c_;
  std::vector<v1::Assignment> g1_;
};

TEST_F(CoordinatorSnapshotTest, EachRankSendsToItsOwnAgentAndTheOtherNode) {
  auto job = c_->SubmitJob(Spec(2));
  ASSERT_TRUE(job.ok()) << job.status();
  for (const std::string node : {"n0", "n1"}) {
    auto resp = Beat(node);
    ASSERT_EQ(resp.assignments_size(), 1);
    const v1::Assignment& a = resp.assignments(0);
    const std::string other = node == "n0" ? "n1" : "n0";
    EXPECT_EQ(a.snapshot_every_steps(), 2);
    ASSERT_EQ(a.snapshot_targets_size(), 2);
    EXPECT_EQ(a.snapshot_targets(0), node + ":7000");
    EXPECT_EQ(a.snapshot_targets(1), other + ":7000");
    EXPECT_TRUE(a.resume_snapshot_address().empty());
    // The agent keeps this (running) job's snapshots.
    EXPECT_TRUE(resp.snapshot_jobs_listed());
    ASSERT_EQ(resp.snapshot_jobs_size(), 1);
    EXPECT_EQ(resp.snapshot_jobs(0), job->job_id());
  }
  // Holdings reach ListAgents (for tools), and a re-registration clears them.
  Beat("n0", {}, {Held(job->job_id(), 0, 4)});
  for (const auto& s : c_->ListAgents()) {
    EXPECT_EQ(s.snapshots_size(), s.info().agent_id() == "n0" ? 1 : 0);
  }
}

TEST_F(CoordinatorSnapshotTest, RestartResumesFromTheNewestCompleteSetOnSurvivors) {
  auto job = c_->SubmitJob(Spec(2));
  ASSERT_TRUE(job.ok());
  const std::string id = job->job_id();
  // Node-0 holds rank 0's own copies and rank 1's peer copies; rank 1's step
  // 14 never arrived whole, so step 12 is the newest complete set there
  // (node-1 held 14 of both, but it is gone).
  auto g2 = LoseNode1(id, {Held(id, 0, 12), Held(id, 0, 14), Held(id, 1, 12)});
  ASSERT_EQ(g2.size(), 2u);
  for (const auto& a : g2) {
    EXPECT_EQ(a.generation(), 2);
    EXPECT_TRUE(a.resume());
    EXPECT_EQ(a.resume_snapshot_step(), 12) << a.ShortDebugString();
    EXPECT_EQ(a.resume_snapshot_address(), "n0:7000");
    EXPECT_EQ(a.snapshot_targets_size(), 2);  // and keeps taking snapshots
  }
}

TEST_F(CoordinatorSnapshotTest, NoCompleteSetMeansTheDiskCheckpoint) {
  auto job = c_->SubmitJob(Spec(2));
  ASSERT_TRUE(job.ok());
  const std::string id = job->job_id();
  auto g2 = LoseNode1(id, {Held(id, 0, 14)});  // rank 1's copy on node-0 never arrived
  ASSERT_EQ(g2.size(), 2u);
  for (const auto& a : g2) {
    EXPECT_TRUE(a.resume());
    EXPECT_TRUE(a.resume_snapshot_address().empty()) << a.ShortDebugString();
  }
}

TEST_F(CoordinatorSnapshotTest, OffByDefaultAndEndedJobsAreNotListed) {
  auto job = c_->SubmitJob(Spec(0));
  ASSERT_TRUE(job.ok());
  auto resp = Beat("n0");
  ASSERT_EQ(resp.assignments_size(), 1);
  EXPECT_EQ(resp.assignments(0).snapshot_targets_size(), 0);
  EXPECT_EQ(resp.assignments(0).snapshot_every_steps(), 0);
  ASSERT_TRUE(c_->CancelJob(job->job_id(), "test").ok());
  resp = Beat("n0");
  EXPECT_TRUE(resp.snapshot_jobs_listed());
  EXPECT_EQ(resp.snapshot_jobs_size(), 0);  // the agent drops the cancelled job's snapshots
}

}  // namespace
}  // namespace kp::coordinator
