// Submit -> run -> complete on CPU with the real daemons' code on loopback:
// an in-process coordinator server, in-process agents that fork/exec the fake
// worker, and the kprun client watching.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "runtime/coordinator/coordinator.h"
#include "runtime/coordinator/server.h"
#include "tests/control_plane/test_cluster.h"

namespace kp::testing {
namespace {

class E2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = coordinator::NewMemoryStateStore();
    coordinator::CoordinatorOptions o;
    o.heartbeat_interval_ms = 200;
    ckpt_root_ = TempDir("ckpt");
    o.roots.checkpoint_root = ckpt_root_;
    coord_ = *coordinator::Coordinator::Create(store_.get(), &clock_, o);
    coordinator::ServerOptions so;
    so.token = kToken;
    so.tick_interval_ms = 100;
    server_ = *coordinator::CoordinatorServer::Start(coord_.get(), so);
    client_ = *launcher::CoordinatorClient::Connect({server_->address(), kToken, "", 5000});
  }
  void TearDown() override { server_->Shutdown(); }

  // Watches to the end; returns the final status and collects every event.
  v1::JobStatus WatchToEnd(const std::string& id, std::vector<v1::JobEvent>* events) {
    auto st = client_->Watch(id, [&](const v1::JobEvent& e) { events->push_back(e); });
    EXPECT_TRUE(st.ok()) << st.status();
    return st.ok() ? *st : v1::JobStatus();
  }

  std::string ckpt_root_;
  RealClock clock_;
  std::unique_ptr<coordinator::StateStore> store_;
  std::unique_ptr<coordinator::Coordinator> coord_;
  std::unique_ptr<coordinator::CoordinatorServer> server_;
  std::unique_ptr<launcher::CoordinatorClient> client_;
};

TEST_F(E2eTest, JobRunsToCompletionOnCpu) {
  TestAgent agent(server_->address(), "node-a", 2, TempDir("runs"));
  auto job = client_->Submit(FakeJob("e2e", 2, 15));
  ASSERT_TRUE(job.ok()) << job.status();
  std::vector<v1::JobEvent> events;
  v1::JobStatus final = WatchToEnd(job->job_id(), &events);
  EXPECT_EQ(final.state(), v1::JOB_STATE_COMPLETED) << final.message();
  EXPECT_EQ(final.progress().step(), 15);
  EXPECT_NEAR(final.progress().loss(), 4.0 / 15, 1e-3);
  std::vector<v1::JobState> states;
  for (const auto& e : events) {
    if (e.type() == v1::EVENT_TYPE_STATE) states.push_back(e.state());
  }
  EXPECT_EQ(states, (std::vector<v1::JobState>{v1::JOB_STATE_SUBMITTED, v1::JOB_STATE_QUEUED, v1::JOB_STATE_PLACED,
                                               v1::JOB_STATE_RUNNING, v1::JOB_STATE_COMPLETED}));
  // Per-rank logs in the run directory, written by the worker itself.
  const std::string logs = agent.run_root() + "/e2e-" + job->job_id() + "/logs";
  for (int r = 0; r < 2; ++r) {
    std::ifstream out(logs + "/g1.rank" + std::to_string(r) + ".out");
    std::stringstream ss;
    ss << out.rdbuf();
    EXPECT_NE(ss.str().find("fake_worker rank " + std::to_string(r) + "/2 steps 15"), std::string::npos) << ss.str();
  }
}

TEST_F(E2eTest, FailingWorkerFailsTheJobWithItsExitCode) {
  TestAgent agent(server_->address(), "node-a", 2, TempDir("runs"));
  auto job = client_->Submit(FakeJob("boom", 2, 3, "fake_exit_code: 3\nfake_fail_rank: 1\n"));
  ASSERT_TRUE(job.ok());
  std::vector<v1::JobEvent> events;
  v1::JobStatus final = WatchToEnd(job->job_id(), &events);
  EXPECT_EQ(final.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(final.exit_code(), 3);
  EXPECT_EQ(final.failed_rank(), 1);
  bool saw = false;
  for (const auto& e : events) {
    if (e.type() == v1::EVENT_TYPE_WORKER && e.exit_code() == 3) {
      saw = true;
      EXPECT_EQ(e.rank(), 1);
      EXPECT_NE(e.message().find("exited with code 3"), std::string::npos);
    }
  }
  EXPECT_TRUE(saw);
}

TEST_F(E2eTest, ElasticJobRestartsAsANewGenerationWithResume) {
  TestAgent agent(server_->address(), "node-a", 2, TempDir("runs"), ckpt_root_);
  v1::JobSpec spec = FakeJob("elastic", 2, 4, "fake_exit_code: 9\nfake_fail_rank: 0\nfake_fail_generation: 1\n");
  spec.set_elastic(true);
  spec.set_max_restarts(2);
  spec.mutable_checkpoint()->set_dir("elastic");
  auto job = client_->Submit(spec);
  ASSERT_TRUE(job.ok()) << job.status();
  std::vector<v1::JobEvent> events;
  v1::JobStatus final = WatchToEnd(job->job_id(), &events);
  EXPECT_EQ(final.state(), v1::JOB_STATE_COMPLETED) << final.message();
  EXPECT_EQ(final.generation(), 2);
  EXPECT_EQ(final.restarts(), 1);
  // Generation 2 was started with --resume (the fake worker logs it).
  std::ifstream out(agent.run_root() + "/elastic-" + job->job_id() + "/logs/g2.rank0.out");
  std::stringstream ss;
  ss << out.rdbuf();
  EXPECT_NE(ss.str().find("resume 1"), std::string::npos) << ss.str();
}

TEST_F(E2eTest, TwoAgentsOnOneHostFormOneJob) {
  TestAgent a(server_->address(), "node-a", 1, TempDir("runs-a"));
  TestAgent b(server_->address(), "node-b", 1, TempDir("runs-b"));
  auto job = client_->Submit(FakeJob("pair", 2, 5));
  ASSERT_TRUE(job.ok());
  std::vector<v1::JobEvent> events;
  EXPECT_EQ(WatchToEnd(job->job_id(), &events).state(), v1::JOB_STATE_COMPLETED);
  // Each agent ran one rank, in its own run root.
  const std::string dir = "/pair-" + job->job_id() + "/logs/";
  EXPECT_TRUE(std::filesystem::exists(a.run_root() + dir + "g1.rank0.out") ||
              std::filesystem::exists(a.run_root() + dir + "g1.rank1.out"));
  EXPECT_TRUE(std::filesystem::exists(b.run_root() + dir + "g1.rank0.out") ||
              std::filesystem::exists(b.run_root() + dir + "g1.rank1.out"));
}

TEST_F(E2eTest, CancelStopsTheWorkers) {
  TestAgent agent(server_->address(), "node-a", 2, TempDir("runs"));
  auto job = client_->Submit(FakeJob("hang", 2, 1, "fake_hang: true\n"));
  ASSERT_TRUE(job.ok());
  for (int i = 0; i < 200 && client_->Get(job->job_id())->state() != v1::JOB_STATE_RUNNING; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ASSERT_EQ(client_->Get(job->job_id())->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(agent.live_workers(), 2);
  ASSERT_TRUE(client_->Cancel(job->job_id(), "test").ok());
  std::vector<v1::JobEvent> events;
  EXPECT_EQ(WatchToEnd(job->job_id(), &events).state(), v1::JOB_STATE_CANCELLED);
  for (int i = 0; i < 200 && agent.live_workers() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  EXPECT_EQ(agent.live_workers(), 0);
}

TEST_F(E2eTest, QueuedJobRunsWhenDevicesFreeUp) {
  TestAgent agent(server_->address(), "node-a", 1, TempDir("runs"));
  auto first = client_->Submit(FakeJob("first", 1, 5));
  auto second = client_->Submit(FakeJob("second", 1, 5));
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(client_->Get(second->job_id())->state(), v1::JOB_STATE_QUEUED);
  std::vector<v1::JobEvent> events;
  EXPECT_EQ(WatchToEnd(second->job_id(), &events).state(), v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(client_->Get(first->job_id())->state(), v1::JOB_STATE_COMPLETED);
  EXPECT_LE(client_->Get(first->job_id())->finished_micros(), client_->Get(second->job_id())->finished_micros());
}

}  // namespace
}  // namespace kp::testing
