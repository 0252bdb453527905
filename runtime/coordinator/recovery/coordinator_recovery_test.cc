// The recovery policy wired into the Coordinator, driven with a FakeClock
// and heartbeats from fake agents (no gRPC, no processes).
#include <gtest/gtest.h>

#include "runtime/coordinator/coordinator.h"
#include "runtime/coordinator/recovery/batch_config.h"

namespace kp::coordinator {
namespace {

constexpr int64_t kSecond = 1'000'000;

v1::JobSpec Spec(int dp, int max_restarts, const std::string& min_dp = "") {
  v1::JobSpec s;
  s.set_name("ft");
  s.set_config_yaml("training:\n  micro_batch: 4\n  grad_accum: 1\nparallel:\n  dp: " + std::to_string(dp) + "\n");
  s.set_dp(dp);
  s.set_cp(1);
  s.set_steps(100);
  s.set_elastic(true);
  s.set_max_restarts(max_restarts);
  if (!min_dp.empty()) (*s.mutable_labels())[recovery::kMinDpLabel] = min_dp;
  return s;
}

v1::AgentInfo Agent(const std::string& id, int slots) {
  v1::AgentInfo info;
  info.set_agent_id(id);
  for (int i = 0; i < slots; ++i) {
    auto* d = info.add_devices();
    d->set_index(i);
    d->set_kind(v1::DEVICE_KIND_CPU);
  }
  return info;
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

class CoordinatorRecoveryTest : public ::testing::Test {
 protected:
  void Start(int64_t deadline_micros = 30 * kSecond) {
    store_ = NewMemoryStateStore();
    CoordinatorOptions o;
    o.heartbeat_timeout_micros = 5 * kSecond;
    o.recovery.policy.replacement_deadline_micros = deadline_micros;
    c_ = std::move(*Coordinator::Create(store_.get(), &clock_, o));
  }
  std::vector<v1::Assignment> Beat(const std::string& agent, std::vector<v1::WorkerReport> reports = {}) {
    v1::HeartbeatRequest req;
    req.set_agent_id(agent);
    for (auto& r : reports) *req.add_workers() = r;
    auto resp = c_->Heartbeat(req);
    EXPECT_TRUE(resp.ok()) << resp.status();
    if (!resp.ok()) return {};
    return {resp->assignments().begin(), resp->assignments().end()};
  }
  std::vector<v1::WorkerReport> Running(const std::vector<v1::Assignment>& as) {
    std::vector<v1::WorkerReport> out;
    for (const auto& a : as) out.push_back(Report(a, v1::WORKER_STATE_RUNNING));
    return out;
  }
  v1::JobStatus Job(const std::string& id) { return *c_->GetJob(id); }
  // Past the restart settle period (two heartbeat intervals), with every
  // agent in `alive` heard from since the fault.
  void Settle(const std::vector<std::string>& alive) {
    clock_.Advance(2 * kSecond + 1);
    for (const auto& a : alive) Beat(a);
    c_->Tick();
  }

  FakeClock clock_{kSecond};
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<Coordinator> c_;
};

TEST_F(CoordinatorRecoveryTest, WorkerKilledRestartsAsNextGenerationWithResume) {
  Start();
  ASSERT_TRUE(c_->RegisterAgent(Agent("a", 2)).ok());
  auto job = c_->SubmitJob(Spec(2, 2));
  ASSERT_TRUE(job.ok()) << job.status();
  auto g1 = Beat("a");
  ASSERT_EQ(g1.size(), 2u);
  EXPECT_FALSE(g1[0].resume());
  Beat("a", Running(g1));
  EXPECT_EQ(Job(job->job_id()).state(), v1::JOB_STATE_RUNNING);
  Beat("a", {Report(g1[0], v1::WORKER_STATE_RUNNING), Report(g1[1], v1::WORKER_STATE_EXITED, 137)});
  EXPECT_EQ(Job(job->job_id()).state(), v1::JOB_STATE_QUEUED);
  EXPECT_TRUE(Beat("a").empty());  // settling: generation 1 is over, 2 not placed yet
  Settle({"a"});
  auto g2 = Beat("a");
  ASSERT_EQ(g2.size(), 2u);
  EXPECT_EQ(g2[0].generation(), 2);
  EXPECT_TRUE(g2[0].resume());
  EXPECT_TRUE(g2[1].resume());
  v1::JobStatus s = Job(job->job_id());
  EXPECT_EQ(s.state(), v1::JOB_STATE_PLACED);
  EXPECT_EQ(s.restarts(), 1);
  // The survivor of generation 1 exits when stopped: a late report, ignored.
  Beat("a", {Report(g1[0], v1::WORKER_STATE_EXITED, 143)});
  EXPECT_EQ(Job(job->job_id()).generation(), 2);
  EXPECT_EQ(Job(job->job_id()).restarts(), 1);
}

TEST_F(CoordinatorRecoveryTest, CrashLoopFailsWithTheHistoryOfCauses) {
  Start();
  ASSERT_TRUE(c_->RegisterAgent(Agent("a", 1)).ok());
  auto job = c_->SubmitJob(Spec(1, 2));
  ASSERT_TRUE(job.ok());
  for (int i = 0; i < 3; ++i) {
    auto as = Beat("a");
    ASSERT_EQ(as.size(), 1u) << "attempt " << i << ": " << Job(job->job_id()).message();
    Beat("a", {Report(as[0], v1::WORKER_STATE_EXITED, i == 1 ? 139 : 1)});
    Settle({"a"});
  }
  v1::JobStatus s = Job(job->job_id());
  EXPECT_EQ(s.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(s.restarts(), 2);
  EXPECT_NE(s.message().find("gave up after 2 restarts"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("generation 2: rank 0 on a exited with code 139 (SIGSEGV)"), std::string::npos)
      << s.message();
}

TEST_F(CoordinatorRecoveryTest, BadConfigExitFailsAtOnce) {
  Start();
  ASSERT_TRUE(c_->RegisterAgent(Agent("a", 1)).ok());
  auto job = c_->SubmitJob(Spec(1, 5));
  auto as = Beat("a");
  ASSERT_EQ(as.size(), 1u);
  Beat("a", {Report(as[0], v1::WORKER_STATE_EXITED, 2)});
  v1::JobStatus s = Job(job->job_id());
  EXPECT_EQ(s.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(s.restarts(), 0);
  EXPECT_NE(s.message().find("cannot fix"), std::string::npos) << s.message();
}

// Rank 0's collective fails the moment its peer's node dies, before that
// node's agent is known to be lost: the restart must not go there.
TEST_F(CoordinatorRecoveryTest, RestartAvoidsAgentsNotHeardFromSinceTheFault) {
  Start();
  ASSERT_TRUE(c_->RegisterAgent(Agent("a", 1)).ok());
  ASSERT_TRUE(c_->RegisterAgent(Agent("b", 1)).ok());
  auto job = c_->SubmitJob(Spec(2, 3));
  auto a1 = Beat("a"), b1 = Beat("b");
  Beat("a", Running(a1));
  Beat("b", Running(b1));
  clock_.Advance(kSecond / 2);
  Beat("a", {Report(a1[0], v1::WORKER_STATE_EXITED, 1)});  // b's node just died
  Settle({"a"});  // b is silent but not yet past its heartbeat timeout
  v1::JobStatus s = Job(job->job_id());
  EXPECT_EQ(s.state(), v1::JOB_STATE_QUEUED) << s.message();
  EXPECT_EQ(s.generation(), 1);
  EXPECT_EQ(s.restarts(), 1);
}

TEST_F(CoordinatorRecoveryTest, LostAgentWaitsForAReplacementUntilTheDeadline) {
  Start(20 * kSecond);
  ASSERT_TRUE(c_->RegisterAgent(Agent("a", 1)).ok());
  ASSERT_TRUE(c_->RegisterAgent(Agent("b", 1)).ok());
  auto job = c_->SubmitJob(Spec(2, 3));
  auto a1 = Beat("a"), b1 = Beat("b");
  Beat("a", Running(a1));
  Beat("b", Running(b1));
  EXPECT_EQ(Job(job->job_id()).state(), v1::JOB_STATE_RUNNING);
  // b goes silent.
  for (int i = 0; i < 7; ++i) {
    clock_.Advance(kSecond);
    Beat("a", Running(a1));
    c_->Tick();
  }
  v1::JobStatus s = Job(job->job_id());
  EXPECT_EQ(s.state(), v1::JOB_STATE_QUEUED) << s.message();
  EXPECT_NE(s.message().find("agent b lost"), std::string::npos) << s.message();
  EXPECT_NE(c_->PrometheusText().find("kp_jobs_waiting_for_replacement 1"), std::string::npos);
  EXPECT_TRUE(Beat("a").empty());  // generation 1 ended everywhere
  clock_.Advance(21 * kSecond);
  Beat("a");
  c_->Tick();
  s = Job(job->job_id());
  EXPECT_EQ(s.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(s.message().find("no replacement within 20.0 s: needs 2 devices, 1 usable"), std::string::npos)
      << s.message();
}

TEST_F(CoordinatorRecoveryTest, ReplacementAgentBeforeTheDeadlineRestartsTheJob) {
  Start(60 * kSecond);
  ASSERT_TRUE(c_->RegisterAgent(Agent("a", 1)).ok());
  ASSERT_TRUE(c_->RegisterAgent(Agent("b", 1)).ok());
  auto job = c_->SubmitJob(Spec(2, 3));
  auto a1 = Beat("a"), b1 = Beat("b");
  for (int i = 0; i < 7; ++i) {
    clock_.Advance(kSecond);
    Beat("a", Running(a1));
    c_->Tick();
  }
  ASSERT_EQ(Job(job->job_id()).state(), v1::JOB_STATE_QUEUED);
  ASSERT_TRUE(c_->RegisterAgent(Agent("c", 1)).ok());
  Settle({"a", "c"});
  v1::JobStatus s = Job(job->job_id());
  EXPECT_EQ(s.state(), v1::JOB_STATE_PLACED) << s.message();
  EXPECT_EQ(s.generation(), 2);
  auto c2 = Beat("c");
  ASSERT_EQ(c2.size(), 1u);
  EXPECT_TRUE(c2[0].resume());
}

TEST_F(CoordinatorRecoveryTest, ElasticJobShrinksDpAndKeepsTheGlobalBatch) {
  Start();
  ASSERT_TRUE(c_->RegisterAgent(Agent("a", 1)).ok());
  ASSERT_TRUE(c_->RegisterAgent(Agent("b", 1)).ok());
  auto job = c_->SubmitJob(Spec(2, 3, /*min_dp=*/"1"));
  auto a1 = Beat("a"), b1 = Beat("b");
  for (int i = 0; i < 10; ++i) {
    clock_.Advance(kSecond);
    Beat("a", Running(a1));
    c_->Tick();
  }
  v1::JobStatus s = Job(job->job_id());
  ASSERT_EQ(s.state(), v1::JOB_STATE_PLACED) << s.message();
  EXPECT_EQ(s.spec().dp(), 1);
  auto a2 = Beat("a");
  ASSERT_EQ(a2.size(), 1u);
  EXPECT_EQ(a2[0].dp(), 1);
  EXPECT_EQ(a2[0].world_size(), 1);
  EXPECT_EQ(a2[0].generation(), 2);
  auto batch = recovery::ReadBatchShape(a2[0].config_yaml());
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->micro_batch * batch->grad_accum * a2[0].dp(), 4 * 1 * 2);
}

// JobSpec.in_process_shrink: a worker that dies mid-run while min_dp
// survivors remain leaves; the generation goes on without it.
v1::JobSpec ShrinkSpec() {
  v1::JobSpec s = Spec(3, 2);
  s.set_min_dp(2);
  s.set_in_process_shrink(true);
  return s;
}

v1::WorkerReport Exited(const v1::Assignment& a, int exit_code, int64_t step, int64_t timed_step) {
  v1::WorkerReport r = Report(a, v1::WORKER_STATE_EXITED, exit_code);
  r.set_step(step);
  r.set_timed_step(timed_step);
  return r;
}

TEST_F(CoordinatorRecoveryTest, InProcessShrinkKeepsTheGenerationAndCompletesWithoutTheDepartedRank) {
  Start();
  ASSERT_TRUE(c_->RegisterAgent(Agent("a", 3)).ok());
  auto job = c_->SubmitJob(ShrinkSpec());
  ASSERT_TRUE(job.ok()) << job.status();
  auto g1 = Beat("a");
  ASSERT_EQ(g1.size(), 3u);
  for (const auto& a : g1) EXPECT_TRUE(a.in_process_shrink());
  Beat("a", Running(g1));
  ASSERT_EQ(Job(job->job_id()).state(), v1::JOB_STATE_RUNNING);
  auto left = Beat("a", {Report(g1[0], v1::WORKER_STATE_RUNNING), Report(g1[1], v1::WORKER_STATE_RUNNING),
                         Report(g1[2], v1::WORKER_STATE_EXITED, 137)});
  v1::JobStatus s = Job(job->job_id());
  EXPECT_EQ(s.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(s.generation(), 1);
  EXPECT_EQ(s.failed_rank(), 2);
  ASSERT_EQ(left.size(), 2u);  // rank 2 is no longer assigned
  EXPECT_EQ(left[0].rank(), 0);
  EXPECT_EQ(left[1].rank(), 1);
  // The late report of the departed rank changes nothing.
  Beat("a", {Report(g1[2], v1::WORKER_STATE_EXITED, 137)});
  EXPECT_EQ(Job(job->job_id()).state(), v1::JOB_STATE_RUNNING);
  Beat("a", {Exited(g1[0], 0, 99, 99), Exited(g1[1], 0, 0, 99)});
  s = Job(job->job_id());
  EXPECT_EQ(s.state(), v1::JOB_STATE_COMPLETED) << s.message();
  EXPECT_EQ(s.generation(), 1);
  EXPECT_EQ(s.restarts(), 0);
  auto events = c_->WaitForEvents(job->job_id(), 0, std::chrono::milliseconds(0));
  ASSERT_TRUE(events.ok());
  bool fault = false;
  for (const auto& e : events->events) {
    if (e.type() == v1::EVENT_TYPE_FAULT) {
      fault = true;
      EXPECT_EQ(e.rank(), 2);
      EXPECT_EQ(e.device(), "a#2");
      EXPECT_NE(e.message().find("re-form in-process"), std::string::npos) << e.message();
    }
  }
  EXPECT_TRUE(fault);
}

TEST_F(CoordinatorRecoveryTest, InProcessShrinkWithoutRankZeroStillSeesAnEarlyStop) {
  Start();
  ASSERT_TRUE(c_->RegisterAgent(Agent("a", 3)).ok());
  auto job = c_->SubmitJob(ShrinkSpec());
  auto g1 = Beat("a");
  ASSERT_EQ(g1.size(), 3u);
  Beat("a", Running(g1));
  Beat("a", {Report(g1[0], v1::WORKER_STATE_EXITED, 137)});
  EXPECT_EQ(Job(job->job_id()).state(), v1::JOB_STATE_RUNNING);
  // Survivors stopped (SIGTERM: exit 0) at step 50 of 100: a restart.
  Beat("a", {Exited(g1[1], 0, 0, 50), Exited(g1[2], 0, 0, 49)});
  v1::JobStatus s = Job(job->job_id());
  EXPECT_EQ(s.state(), v1::JOB_STATE_QUEUED) << s.message();
  EXPECT_EQ(s.restarts(), 1);
}

TEST_F(CoordinatorRecoveryTest, InProcessShrinkBelowMinDpRestartsFromTheCheckpoint) {
  Start();
  ASSERT_TRUE(c_->RegisterAgent(Agent("a", 3)).ok());
  auto job = c_->SubmitJob(ShrinkSpec());
  auto g1 = Beat("a");
  ASSERT_EQ(g1.size(), 3u);
  Beat("a", Running(g1));
  Beat("a", {Report(g1[2], v1::WORKER_STATE_EXITED, 137)});
  EXPECT_EQ(Job(job->job_id()).state(), v1::JOB_STATE_RUNNING);
  // A second loss leaves 1 < min_dp 2: the normal recovery.
  Beat("a", {Report(g1[1], v1::WORKER_STATE_EXITED, 1)});
  v1::JobStatus s = Job(job->job_id());
  EXPECT_EQ(s.state(), v1::JOB_STATE_QUEUED) << s.message();
  Settle({"a"});
  auto g2 = Beat("a");
  ASSERT_EQ(g2.size(), 3u);  // full size again
  EXPECT_EQ(g2[0].generation(), 2);
  EXPECT_TRUE(g2[0].resume());
}

TEST_F(CoordinatorRecoveryTest, InProcessShrinkDoesNotCoverAWatchdogAbort) {
  Start();
  ASSERT_TRUE(c_->RegisterAgent(Agent("a", 3)).ok());
  auto job = c_->SubmitJob(ShrinkSpec());
  auto g1 = Beat("a");
  Beat("a", Running(g1));
  Beat("a", {Report(g1[1], v1::WORKER_STATE_EXITED, 75)});
  EXPECT_EQ(Job(job->job_id()).state(), v1::JOB_STATE_QUEUED);
}

}  // namespace
}  // namespace kp::coordinator
