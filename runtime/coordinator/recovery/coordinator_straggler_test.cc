// Stragglers and fault history through the Coordinator, with a FakeClock,
// fake agents and the SQLite state store: per-rank measured step times flag
// the slow rank (a persisted STRAGGLER event and kp_rank_straggler 1), with
// exclude_stragglers its device is avoided by the next generation, and the
// fault history, straggler verdicts and exclusion survive a coordinator
// restart on the same database.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <map>

#include "runtime/coordinator/coordinator.h"

namespace kp::coordinator {
namespace {

constexpr int64_t kSecond = 1'000'000;

v1::JobSpec Spec() {
  v1::JobSpec s;
  s.set_name("strag");
  s.set_config_yaml("training:\n  micro_batch: 4\n  grad_accum: 1\nparallel:\n  dp: 2\n");
  s.set_dp(2);
  s.set_cp(1);
  s.set_steps(100);
  s.set_elastic(true);
  s.set_max_restarts(3);
  s.set_min_dp(1);  // the field, not the deprecated label
  return s;
}

v1::AgentInfo Agent(const std::string& id) {
  v1::AgentInfo info;
  info.set_agent_id(id);
  auto* d = info.add_devices();
  d->set_index(0);
  d->set_kind(v1::DEVICE_KIND_CPU);
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

class CoordinatorStragglerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    db_ = std::string(tmp != nullptr ? tmp : "/tmp") + "/straggler-" + std::to_string(::getpid()) + ".db";
    std::remove(db_.c_str());
    Open();
  }
  void TearDown() override {
    c_.reset();
    store_.reset();
    for (const char* ext : {"", "-wal", "-shm"}) std::remove((db_ + ext).c_str());
  }
  // (Re)starts the coordinator on the same database.
  void Open() {
    c_.reset();
    store_.reset();
    auto store = OpenSqliteStateStore(db_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    CoordinatorOptions o;
    o.heartbeat_timeout_micros = 30 * kSecond;
    o.recovery.straggler.factor = 1.5;
    o.recovery.straggler.window = 4;
    o.recovery.exclude_stragglers = true;
    auto c = Coordinator::Create(store_.get(), &clock_, o);
    ASSERT_TRUE(c.ok()) << c.status();
    c_ = std::move(*c);
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
  // Every agent's assignments, by rank.
  std::map<int, v1::Assignment> Placement(const std::vector<std::string>& agents) {
    std::map<int, v1::Assignment> out;
    for (const auto& a : agents) {
      for (const auto& as : Beat(a)) out[as.rank()] = as;
    }
    return out;
  }
  // `steps` steps of every rank: rank `slow` computes `slow_s` per step,
  // the others 0.05 s (with a little spread).
  void RunSteps(const std::map<int, v1::Assignment>& placed, int first_step, int steps, int slow, double slow_s) {
    for (int step = first_step; step < first_step + steps; ++step) {
      clock_.Advance(kSecond / 2);
      for (const auto& [rank, a] : placed) {
        v1::WorkerReport r = Report(a, v1::WORKER_STATE_RUNNING);
        r.set_step(step);
        r.set_timed_step(step);
        r.set_compute_s(rank == slow ? slow_s : 0.05 + 0.001 * rank);
        r.set_comm_wait_s(rank == slow ? 0.001 : slow_s);
        Beat(a.agent_id(), {r});
      }
    }
  }
  std::vector<v1::JobEvent> Events(const std::string& id, v1::EventType type) {
    auto batch = c_->WaitForEvents(id, 0, std::chrono::milliseconds(0));
    EXPECT_TRUE(batch.ok()) << batch.status();
    std::vector<v1::JobEvent> out;
    if (!batch.ok()) return out;
    for (const auto& e : batch->events) {
      if (e.type() == type) out.push_back(e);
    }
    return out;
  }
  void Settle(const std::vector<std::string>& alive) {
    clock_.Advance(2 * kSecond + 1);
    for (const auto& a : alive) Beat(a);
    c_->Tick();
  }
  static std::string Device(const v1::Assignment& a) { return a.agent_id() + "#" + std::to_string(a.device_index()); }

  std::string db_;
  FakeClock clock_{kSecond};
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<Coordinator> c_;
};

TEST_F(CoordinatorStragglerTest, SlowRankFlaggedExcludedAndRememberedAcrossARestart) {
  const std::vector<std::string> agents = {"a", "b", "c"};
  for (const auto& a : agents) ASSERT_TRUE(c_->RegisterAgent(Agent(a)).ok());
  auto job = c_->SubmitJob(Spec());
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string id = job->job_id();
  auto g1 = Placement(agents);
  ASSERT_EQ(g1.size(), 2u);
  const std::string slow_device = Device(g1[1]);

  // Fewer than `window` steps: no verdict yet.
  RunSteps(g1, 1, 3, /*slow=*/1, 0.4);
  EXPECT_TRUE(Events(id, v1::EVENT_TYPE_STRAGGLER).empty());
  RunSteps(g1, 4, 3, /*slow=*/1, 0.4);
  auto verdicts = Events(id, v1::EVENT_TYPE_STRAGGLER);
  ASSERT_EQ(verdicts.size(), 1u);
  EXPECT_EQ(verdicts[0].rank(), 1);
  EXPECT_TRUE(verdicts[0].straggler());
  EXPECT_EQ(verdicts[0].device(), slow_device);
  EXPECT_EQ(verdicts[0].generation(), 1);
  EXPECT_NEAR(verdicts[0].step_time_s(), 0.4, 1e-9);
  EXPECT_GT(verdicts[0].step_time_s(), 1.5 * verdicts[0].median_step_time_s());
  EXPECT_NE(verdicts[0].message().find("(straggler)"), std::string::npos) << verdicts[0].message();
  const std::string metrics = c_->PrometheusText();
  EXPECT_NE(metrics.find("kp_rank_straggler{job=\"" + id + "\",rank=\"1\"} 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("kp_rank_straggler{job=\"" + id + "\",rank=\"0\"} 0\n"), std::string::npos) << metrics;

  // A fault: the straggler's device is excluded from generation 2, which
  // goes on the spare agent at full size.
  Beat(g1[0].agent_id(), {Report(g1[0], v1::WORKER_STATE_EXITED, 137)});
  auto faults = Events(id, v1::EVENT_TYPE_FAULT);
  ASSERT_EQ(faults.size(), 2u);
  // The exclusion is recorded as the fault is handled (first), then the fault.
  EXPECT_EQ(faults[0].device(), slow_device);
  EXPECT_NE(faults[0].message().find("excluded " + slow_device + ": straggler in generation 1"),
            std::string::npos)
      << faults[0].message();
  EXPECT_TRUE(faults[1].device().empty());
  EXPECT_NE(faults[1].message().find("generation 1: rank 0 on " + g1[0].agent_id() + " exited with code 137"),
            std::string::npos)
      << faults[1].message();
  Settle(agents);
  auto g2 = Placement(agents);
  ASSERT_EQ(g2.size(), 2u);
  for (const auto& [rank, a] : g2) {
    EXPECT_EQ(a.generation(), 2);
    EXPECT_NE(Device(a), slow_device) << "rank " << rank;
  }

  // The coordinator restarts on the same database: the events are still
  // there, and so is what they record.
  Open();
  EXPECT_EQ(Events(id, v1::EVENT_TYPE_STRAGGLER).size(), 1u);
  EXPECT_EQ(Events(id, v1::EVENT_TYPE_FAULT).size(), 2u);
  // Generation 2 faults; only the excluded agent and one other are alive
  // (heard from since the fault).
  clock_.Advance(kSecond);
  // Were the exclusion forgotten, generation 3 would run at full size on
  // both; remembered, it shrinks to dp = 1 (min_dp) on the other.
  const std::string survivor = g2[0].agent_id();
  Beat(survivor, {Report(g2[0], v1::WORKER_STATE_EXITED, 1)});
  const std::string slow_agent = g1[1].agent_id();
  Settle({survivor, slow_agent});
  auto g3 = Placement({survivor, slow_agent});
  ASSERT_EQ(g3.size(), 1u) << c_->GetJob(id)->message();
  EXPECT_EQ(g3.begin()->second.agent_id(), survivor);
  EXPECT_EQ(g3.begin()->second.dp(), 1);
  // The history of every fault, before and after the restart, names them.
  faults = Events(id, v1::EVENT_TYPE_FAULT);
  ASSERT_EQ(faults.size(), 3u);
  EXPECT_NE(faults[2].message().find("generation 2: rank 0 on " + survivor + " exited with code 1"),
            std::string::npos)
      << faults[2].message();
}

TEST_F(CoordinatorStragglerTest, EvenRanksAreNotFlagged) {
  const std::vector<std::string> agents = {"a", "b"};
  for (const auto& a : agents) ASSERT_TRUE(c_->RegisterAgent(Agent(a)).ok());
  auto job = c_->SubmitJob(Spec());
  ASSERT_TRUE(job.ok());
  auto g1 = Placement(agents);
  ASSERT_EQ(g1.size(), 2u);
  RunSteps(g1, 1, 12, /*slow=*/-1, 0.05);
  EXPECT_TRUE(Events(job->job_id(), v1::EVENT_TYPE_STRAGGLER).empty());
  EXPECT_NE(c_->PrometheusText().find("kp_rank_straggler{job=\"" + job->job_id() + "\",rank=\"1\"} 0\n"),
            std::string::npos);
}

// The fault history in a FAILED job's message spans a coordinator restart.
TEST_F(CoordinatorStragglerTest, FaultHistorySurvivesARestartIntoTheFailureMessage) {
  ASSERT_TRUE(c_->RegisterAgent(Agent("a")).ok());
  v1::JobSpec spec = Spec();
  spec.set_dp(1);
  spec.set_min_dp(0);
  spec.set_config_yaml("training:\n  micro_batch: 4\n  grad_accum: 1\nparallel:\n  dp: 1\n");
  spec.set_max_restarts(1);
  auto job = c_->SubmitJob(spec);
  ASSERT_TRUE(job.ok()) << job.status();
  auto as = Beat("a");
  ASSERT_EQ(as.size(), 1u);
  Beat("a", {Report(as[0], v1::WORKER_STATE_EXITED, 139)});
  Open();
  Settle({"a"});
  as = Beat("a");
  ASSERT_EQ(as.size(), 1u) << c_->GetJob(job->job_id())->message();
  EXPECT_EQ(as[0].generation(), 2);
  Beat("a", {Report(as[0], v1::WORKER_STATE_EXITED, 1)});
  v1::JobStatus s = *c_->GetJob(job->job_id());
  EXPECT_EQ(s.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(s.message().find("gave up after 1 restarts (max_restarts = 1)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("2 faults"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("generation 1: rank 0 on a exited with code 139 (SIGSEGV)"), std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace kp::coordinator
