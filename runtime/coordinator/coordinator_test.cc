#include "runtime/coordinator/coordinator.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace kp::coordinator {
namespace {

v1::JobSpec Spec(const std::string& name, int dp, int cp, int priority = 0) {
  v1::JobSpec s;
  s.set_name(name);
  s.set_config_yaml("model: {}\n");
  s.set_dp(dp);
  s.set_cp(cp);
  s.set_steps(5);
  s.set_priority(priority);
  return s;
}

v1::AgentInfo Agent(const std::string& id, int gpus) {
  v1::AgentInfo info;
  info.set_agent_id(id);
  for (int i = 0; i < gpus; ++i) {
    auto* d = info.add_devices();
    d->set_index(i);
    d->set_kind(v1::DEVICE_KIND_CUDA);
  }
  return info;
}

v1::WorkerReport Report(const v1::Assignment& a, v1::WorkerState state, int exit_code = 0, int64_t step = 0) {
  v1::WorkerReport r;
  r.set_job_id(a.job_id());
  r.set_generation(a.generation());
  r.set_rank(a.rank());
  r.set_state(state);
  r.set_exit_code(exit_code);
  r.set_step(step);
  r.set_loss(2.5 - 0.1 * step);
  r.set_tokens_per_s(100);
  return r;
}

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = NewMemoryStateStore();
    options_.heartbeat_timeout_micros = 5'000'000;
    const char* tmp = std::getenv("TEST_TMPDIR");
    options_.roots.checkpoint_root = tmp != nullptr ? tmp : "/tmp";
    auto c = Coordinator::Create(store_.get(), &clock_, options_);
    ASSERT_TRUE(c.ok()) << c.status();
    c_ = std::move(*c);
  }

  v1::JobState State(const std::string& id) { return c_->GetJob(id)->state(); }

  // One heartbeat with `reports`; returns the agent's assignments.
  std::vector<v1::Assignment> Beat(const std::string& agent, std::vector<v1::WorkerReport> reports = {}) {
    v1::HeartbeatRequest req;
    req.set_agent_id(agent);
    for (auto& r : reports) *req.add_workers() = r;
    auto resp = c_->Heartbeat(req);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return {resp->assignments().begin(), resp->assignments().end()};
  }

  FakeClock clock_{1'000'000};
  CoordinatorOptions options_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<Coordinator> c_;
};

// An FP8 job on a cluster of CPU slots and pre-Ada GPUs is refused at
// submission, naming the devices; with fallback allowed, or once an FP8 GPU
// has registered, it is accepted.
TEST_F(CoordinatorTest, Fp8JobWithoutFp8DevicesIsRefusedAtSubmission) {
  v1::AgentInfo cpu;
  cpu.set_agent_id("cpu-node");
  for (int i = 0; i < 2; ++i) {
    auto* d = cpu.add_devices();
    d->set_index(i);
    d->set_kind(v1::DEVICE_KIND_CPU);
  }
  v1::AgentInfo a100 = Agent("a100-node", 1);
  a100.mutable_devices(0)->set_model("NVIDIA A100-SXM4-80GB");
  a100.mutable_devices(0)->set_compute_capability("8.0");
  ASSERT_TRUE(c_->RegisterAgent(cpu).ok());
  ASSERT_TRUE(c_->RegisterAgent(a100).ok());
  v1::JobSpec fp8 = Spec("f", 1, 1);
  fp8.set_precision(v1::PRECISION_FP8);
  auto refused = c_->SubmitJob(fp8);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(refused.status().message());
  EXPECT_NE(msg.find("spec.precision"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cpu-node: 2 CPU slots"), std::string::npos) << msg;
  EXPECT_NE(msg.find("a100-node: 1 x NVIDIA A100-SXM4-80GB (8.0)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fp8.allow_fallback"), std::string::npos) << msg;
  EXPECT_TRUE(c_->ListJobs({}).empty()) << "a refused job must not be stored";

  v1::JobSpec fallback = fp8;
  fallback.set_config_yaml("model: {}\nfp8:\n  allow_fallback: true\n");
  EXPECT_TRUE(c_->SubmitJob(fallback).ok());
  EXPECT_TRUE(c_->SubmitJob(Spec("bf16", 1, 1)).ok());  // other precisions are not checked

  v1::AgentInfo h100 = Agent("h100-node", 1);
  h100.mutable_devices(0)->set_compute_capability("9.0");
  ASSERT_TRUE(c_->RegisterAgent(h100).ok());
  EXPECT_TRUE(c_->SubmitJob(fp8).ok());
}

TEST_F(CoordinatorTest, JobWaitsForDevicesThenRunsToCompletion) {
  auto job = c_->SubmitJob(Spec("a", 2, 1));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_QUEUED);  // no agents yet

  ASSERT_TRUE(c_->RegisterAgent(Agent("n1", 2)).ok());
  EXPECT_EQ(State(job->job_id()), v1::JOB_STATE_PLACED);
  auto as = Beat("n1");
  ASSERT_EQ(as.size(), 2u);
  EXPECT_EQ(as[0].generation(), 1);
  EXPECT_EQ(as[1].shard_index(), 1);
  EXPECT_EQ(as[1].num_shards(), 2);
  EXPECT_EQ(as[0].rendezvous_prefix(), "jobs/" + job->job_id() + "/g1/");

  Beat("n1", {Report(as[0], v1::WORKER_STATE_RUNNING, 0, 3), Report(as[1], v1::WORKER_STATE_RUNNING, 0, 3)});
  auto running = c_->GetJob(job->job_id());
  EXPECT_EQ(running->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(running->progress().step(), 3);
  EXPECT_DOUBLE_EQ(running->progress().tokens_per_s(), 100);  // rank 0's

  Beat("n1", {Report(as[0], v1::WORKER_STATE_EXITED), Report(as[1], v1::WORKER_STATE_EXITED)});
  EXPECT_EQ(State(job->job_id()), v1::JOB_STATE_COMPLETED);
  EXPECT_TRUE(Beat("n1").empty());  // the agent is told to run nothing
}

TEST_F(CoordinatorTest, HigherPriorityIsPlacedFirstAndLowerWaits) {
  ASSERT_TRUE(c_->RegisterAgent(Agent("n1", 1)).ok());
  // The device is busy with `first`; then low and high queue behind it.
  auto first = c_->SubmitJob(Spec("first", 1, 1));
  auto low = c_->SubmitJob(Spec("low", 1, 1, -5));
  auto high = c_->SubmitJob(Spec("high", 1, 1, 10));
  EXPECT_EQ(State(first->job_id()), v1::JOB_STATE_PLACED);
  EXPECT_EQ(State(low->job_id()), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(State(high->job_id()), v1::JOB_STATE_QUEUED);

  ASSERT_TRUE(c_->CancelJob(first->job_id(), "make room").ok());
  EXPECT_EQ(State(first->job_id()), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(State(high->job_id()), v1::JOB_STATE_PLACED);
  EXPECT_EQ(State(low->job_id()), v1::JOB_STATE_QUEUED);
  EXPECT_TRUE(absl::IsFailedPrecondition(c_->CancelJob(first->job_id(), "").status()));
}

TEST_F(CoordinatorTest, OversizedJobDoesNotBlockTheQueue) {
  ASSERT_TRUE(c_->RegisterAgent(Agent("n1", 2)).ok());
  auto huge = c_->SubmitJob(Spec("huge", 4, 2, 100));
  auto small = c_->SubmitJob(Spec("small", 1, 2));
  EXPECT_EQ(State(huge->job_id()), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(State(small->job_id()), v1::JOB_STATE_PLACED);
}

TEST_F(CoordinatorTest, CpGroupsArePackedPerNode) {
  ASSERT_TRUE(c_->RegisterAgent(Agent("n1", 4)).ok());
  ASSERT_TRUE(c_->RegisterAgent(Agent("n2", 4)).ok());
  auto job = c_->SubmitJob(Spec("dpcp", 2, 4));
  ASSERT_EQ(State(job->job_id()), v1::JOB_STATE_PLACED);
  auto a1 = Beat("n1");
  auto a2 = Beat("n2");
  ASSERT_EQ(a1.size(), 4u);
  ASSERT_EQ(a2.size(), 4u);
  for (const auto& a : a1) EXPECT_EQ(a.dp_index(), a1[0].dp_index());
  for (const auto& a : a2) EXPECT_EQ(a.dp_index(), a2[0].dp_index());
  EXPECT_NE(a1[0].dp_index(), a2[0].dp_index());
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(a1[i].local_rank(), i);
    EXPECT_EQ(a1[i].local_world_size(), 4);
  }
}

TEST_F(CoordinatorTest, WorkerFailureFailsTheJobWithItsExitCode) {
  ASSERT_TRUE(c_->RegisterAgent(Agent("n1", 2)).ok());
  auto job = c_->SubmitJob(Spec("f", 2, 1));
  auto as = Beat("n1");
  Beat("n1", {Report(as[0], v1::WORKER_STATE_RUNNING), Report(as[1], v1::WORKER_STATE_EXITED, 7)});
  auto st = c_->GetJob(job->job_id());
  EXPECT_EQ(st->state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(st->exit_code(), 7);
  EXPECT_EQ(st->failed_rank(), 1);
  auto batch = c_->WaitForEvents(job->job_id(), 0, std::chrono::milliseconds(0));
  ASSERT_TRUE(batch.ok());
  EXPECT_TRUE(batch->finished);
  bool saw_worker_exit = false;
  for (const auto& e : batch->events) {
    if (e.type() == v1::EVENT_TYPE_WORKER && e.exit_code() == 7 && e.rank() == 1) saw_worker_exit = true;
  }
  EXPECT_TRUE(saw_worker_exit);
}

TEST_F(CoordinatorTest, ElasticJobIsReplacedAsANewGeneration) {
  ASSERT_TRUE(c_->RegisterAgent(Agent("n1", 1)).ok());
  v1::JobSpec spec = Spec("e", 1, 1);
  spec.set_elastic(true);
  spec.set_max_restarts(1);
  spec.mutable_checkpoint()->set_dir("e");
  auto job = c_->SubmitJob(spec);
  ASSERT_TRUE(job.ok()) << job.status();
  auto as = Beat("n1");
  ASSERT_EQ(as.size(), 1u);
  Beat("n1", {Report(as[0], v1::WORKER_STATE_EXITED, 3)});
  // Generation 2 is placed after the restart settle period (two heartbeat
  // intervals), on agents heard from since the fault.
  clock_.Advance(2'000'001);
  Beat("n1");
  c_->Tick();
  auto as2 = Beat("n1");
  ASSERT_EQ(as2.size(), 1u);
  EXPECT_EQ(as2[0].generation(), 2);
  EXPECT_TRUE(as2[0].resume());
  EXPECT_EQ(c_->GetJob(job->job_id())->restarts(), 1);
  // An old-generation report is ignored; the second fault fails the job.
  Beat("n1", {Report(as[0], v1::WORKER_STATE_EXITED, 3)});
  EXPECT_EQ(State(job->job_id()), v1::JOB_STATE_PLACED);
  Beat("n1", {Report(as2[0], v1::WORKER_STATE_EXITED, 4)});
  EXPECT_EQ(State(job->job_id()), v1::JOB_STATE_FAILED);
}

TEST_F(CoordinatorTest, HeartbeatTimeoutMarksAgentLostAndFailsItsJobs) {
  ASSERT_TRUE(c_->RegisterAgent(Agent("n1", 1)).ok());
  ASSERT_TRUE(c_->RegisterAgent(Agent("n2", 1)).ok());
  auto job = c_->SubmitJob(Spec("l", 1, 1));
  const std::string placed_on = Beat("n1").empty() ? "n2" : "n1";
  clock_.Advance(3'000'000);
  Beat("n1");
  Beat("n2");
  clock_.Advance(3'000'000);
  c_->Tick();  // 3 s since the last beat: both alive
  for (const auto& a : c_->ListAgents()) EXPECT_EQ(a.state(), v1::AGENT_STATE_ALIVE);
  Beat(placed_on == "n1" ? "n2" : "n1");
  clock_.Advance(2'500'000);
  c_->Tick();  // 5.5 s of silence from the agent running the job
  for (const auto& a : c_->ListAgents()) {
    EXPECT_EQ(a.state(), a.info().agent_id() == placed_on ? v1::AGENT_STATE_LOST : v1::AGENT_STATE_ALIVE);
  }
  auto st = c_->GetJob(job->job_id());
  EXPECT_EQ(st->state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(st->message().find("lost"), std::string::npos);
  // A lost agent that heartbeats again is alive.
  Beat(placed_on);
  for (const auto& a : c_->ListAgents()) EXPECT_EQ(a.state(), v1::AGENT_STATE_ALIVE);
}

TEST_F(CoordinatorTest, UnknownAgentMustRegister) {
  v1::HeartbeatRequest req;
  req.set_agent_id("ghost");
  EXPECT_TRUE(absl::IsNotFound(c_->Heartbeat(req).status()));
}

TEST_F(CoordinatorTest, PrometheusTextHasJobsAgentsAndProgress) {
  ASSERT_TRUE(c_->RegisterAgent(Agent("n1", 1)).ok());
  auto job = c_->SubmitJob(Spec("p", 1, 1));
  c_->SubmitJob(Spec("q", 1, 1)).IgnoreError();
  auto as = Beat("n1");
  Beat("n1", {Report(as[0], v1::WORKER_STATE_RUNNING, 0, 4)});
  std::string text = c_->PrometheusText();
  EXPECT_NE(text.find("kp_jobs{state=\"running\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kp_jobs{state=\"queued\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kp_agents{state=\"alive\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kp_job_step{job=\"" + job->job_id() + "\",name=\"p\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE kp_job_tokens_per_second gauge"), std::string::npos) << text;
}

TEST(CoordinatorRestart, SqliteRestartLosesNothing) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp != nullptr ? tmp : "/tmp") + "/restart-" + std::to_string(::getpid()) + ".db";
  std::filesystem::remove(path);
  FakeClock clock(1'000'000);
  std::string running_id, queued_id, done_id;
  std::vector<v1::Assignment> before;
  {
    auto store = OpenSqliteStateStore(path);
    ASSERT_TRUE(store.ok());
    auto c = *Coordinator::Create(store->get(), &clock, {});
    ASSERT_TRUE(c->RegisterAgent(Agent("n1", 2)).ok());
    done_id = c->SubmitJob(Spec("done", 1, 1))->job_id();
    running_id = c->SubmitJob(Spec("run", 1, 1))->job_id();
    queued_id = c->SubmitJob(Spec("wait", 2, 1))->job_id();
    v1::HeartbeatRequest req;
    req.set_agent_id("n1");
    auto resp = c->Heartbeat(req);
    for (const auto& a : resp->assignments()) {
      v1::WorkerReport r;
      r.set_job_id(a.job_id());
      r.set_generation(a.generation());
      r.set_rank(a.rank());
      r.set_state(a.job_id() == done_id ? v1::WORKER_STATE_EXITED : v1::WORKER_STATE_RUNNING);
      *req.add_workers() = r;
    }
    resp = c->Heartbeat(req);
    before.assign(resp->assignments().begin(), resp->assignments().end());
    ASSERT_EQ(c->GetJob(done_id)->state(), v1::JOB_STATE_COMPLETED);
    ASSERT_EQ(c->GetJob(running_id)->state(), v1::JOB_STATE_RUNNING);
    ASSERT_EQ(c->GetJob(queued_id)->state(), v1::JOB_STATE_QUEUED);
    // No clean shutdown: the coordinator object just goes away.
  }
  auto store = OpenSqliteStateStore(path);
  ASSERT_TRUE(store.ok());
  auto c = *Coordinator::Create(store->get(), &clock, {});
  EXPECT_EQ(c->GetJob(done_id)->state(), v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(c->GetJob(running_id)->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(c->GetJob(queued_id)->state(), v1::JOB_STATE_QUEUED);
  ASSERT_EQ(c->ListAgents().size(), 1u);
  v1::HeartbeatRequest req;
  req.set_agent_id("n1");  // known without registering again
  auto resp = c->Heartbeat(req);
  ASSERT_TRUE(resp.ok()) << resp.status();
  ASSERT_EQ(resp->assignments_size(), 1);
  EXPECT_EQ(resp->assignments(0).DebugString(), before.at(0).DebugString());
  // New jobs continue the numbering; events survived and continue after.
  auto next = c->SubmitJob(Spec("next", 1, 1));
  EXPECT_GT(next->sequence(), c->GetJob(queued_id)->sequence());
  auto batch = c->WaitForEvents(done_id, 0, std::chrono::milliseconds(0));
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(batch->events.back().state(), v1::JOB_STATE_COMPLETED);
  // The running job completing after the restart still works.
  v1::WorkerReport r;
  r.set_job_id(running_id);
  r.set_generation(resp->assignments(0).generation());
  r.set_state(v1::WORKER_STATE_EXITED);
  *req.add_workers() = r;
  ASSERT_TRUE(c->Heartbeat(req).ok());
  EXPECT_EQ(c->GetJob(running_id)->state(), v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(c->GetJob(queued_id)->state(), v1::JOB_STATE_PLACED);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace kp::coordinator

namespace kp::coordinator {
namespace {

TEST_F(CoordinatorTest, FastJobStillReportsRunningBeforeItsExits) {
  ASSERT_TRUE(c_->RegisterAgent(Agent("n1", 2)).ok());
  auto job = c_->SubmitJob(Spec("fast", 2, 1));
  auto as = Beat("n1");
  // The workers started and finished between two heartbeats.
  Beat("n1", {Report(as[0], v1::WORKER_STATE_EXITED), Report(as[1], v1::WORKER_STATE_EXITED)});
  auto batch = c_->WaitForEvents(job->job_id(), 0, std::chrono::milliseconds(0));
  ASSERT_TRUE(batch.ok());
  std::vector<std::string> kinds;
  for (const auto& e : batch->events) {
    if (e.type() == v1::EVENT_TYPE_PROGRESS) continue;
    kinds.push_back(e.type() == v1::EVENT_TYPE_WORKER ? "worker" : v1::JobState_Name(e.state()));
  }
  EXPECT_EQ(kinds, (std::vector<std::string>{"JOB_STATE_SUBMITTED", "JOB_STATE_QUEUED", "JOB_STATE_PLACED",
                                             "JOB_STATE_RUNNING", "worker", "worker", "JOB_STATE_COMPLETED"}));
}

}  // namespace
}  // namespace kp::coordinator
