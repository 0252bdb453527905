#include "runtime/agent/supervisor.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/agent/fake_process_launcher.h"

namespace kp::agent {
namespace {

v1::Assignment Assign(const std::string& job, int gen, int rank, int world = 2) {
  v1::Assignment a;
  a.set_job_id(job);
  a.set_generation(gen);
  a.set_rank(rank);
  a.set_world_size(world);
  a.set_dp(world);
  a.set_cp(1);
  a.set_device_index(rank + 4);
  a.set_local_rank(rank);
  a.set_device_kind(v1::DEVICE_KIND_CUDA);
  a.set_steps(10);
  a.set_run_name("tiny-" + job);
  a.set_config_yaml("model: {layers: 2}\n");
  a.set_rendezvous_prefix("jobs/" + job + "/g" + std::to_string(gen) + "/");
  return a;
}

class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    options_.run_root = std::string(tmp != nullptr ? tmp : "/tmp") + "/runs-" + std::to_string(::getpid());
    options_.worker_binary = "/opt/kp/kp-train";
    options_.stop_grace_micros = 5'000'000;
    sup_ = std::make_unique<Supervisor>(&launcher_, &clock_, options_);
  }
  void TearDown() override { std::filesystem::remove_all(options_.run_root); }

  FakeProcessLauncher launcher_;
  FakeClock clock_;
  SupervisorOptions options_;
  std::unique_ptr<Supervisor> sup_;
};

TEST_F(SupervisorTest, StartsOneWorkerPerAssignmentWithItsCommand) {
  sup_->Reconcile({Assign("j1", 1, 0), Assign("j1", 1, 1)});
  ASSERT_EQ(launcher_.started(), 2u);
  auto p = launcher_.Get(2);
  const auto& argv = p.spec.argv;
  const std::string run_dir = options_.run_root + "/tiny-j1";
  std::vector<std::string> expected = {"/opt/kp/kp-train", "--config", run_dir + "/config.yaml", "--run_dir", run_dir,
                                       "--steps", "10", "--device", "cuda", "--rank", "1", "--world_size", "2",
                                       "--local_rank", "5", "--rendezvous", run_dir + "/rendezvous/g1",
                                       "--metrics_jsonl", run_dir + "/metrics/g1.rank1.jsonl"};
  EXPECT_EQ(argv, expected);
  EXPECT_EQ(p.spec.stdout_path, run_dir + "/logs/g1.rank1.out");
  EXPECT_NE(std::find(p.spec.env.begin(), p.spec.env.end(), "KP_RENDEZVOUS_PREFIX=jobs/j1/g1/"), p.spec.env.end());
  std::ifstream cfg(run_dir + "/config.yaml");
  std::stringstream text;
  text << cfg.rdbuf();
  EXPECT_NE(text.str().find("layers: 2"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("dp: 2"), std::string::npos) << text.str();
  // Reconciling the same set again starts nothing new.
  sup_->Reconcile({Assign("j1", 1, 0), Assign("j1", 1, 1)});
  EXPECT_EQ(launcher_.started(), 2u);
}

TEST_F(SupervisorTest, ReportsProgressAndExitCodesAndNeverRestarts) {
  sup_->Reconcile({Assign("j1", 1, 0)});
  const std::string metrics = options_.run_root + "/tiny-j1/metrics/g1.rank0.jsonl";
  std::ofstream(metrics) << "{\"step\": 4, \"loss\": 2.5, \"tokens_per_s\": 321}\n";
  EXPECT_FALSE(sup_->Poll());
  auto r = sup_->Reports();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].state(), v1::WORKER_STATE_RUNNING);
  EXPECT_EQ(r[0].step(), 4);
  EXPECT_DOUBLE_EQ(r[0].tokens_per_s(), 321);
  launcher_.Exit(1, 9);
  EXPECT_TRUE(sup_->Poll());
  r = sup_->Reports();
  EXPECT_EQ(r[0].state(), v1::WORKER_STATE_EXITED);
  EXPECT_EQ(r[0].exit_code(), 9);
  sup_->Reconcile({Assign("j1", 1, 0)});  // still wanted: not restarted
  EXPECT_EQ(launcher_.started(), 1u);
  sup_->Reconcile({Assign("j1", 2, 0)});  // a new generation is a new worker
  EXPECT_EQ(launcher_.started(), 2u);
  r = sup_->Reports();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].generation(), 2);
}

TEST_F(SupervisorTest, UnassignedWorkersGetSigtermThenSigkillAfterGrace) {
  launcher_.set_exits_on_sigterm(false);
  sup_->Reconcile({Assign("j1", 1, 0)});
  sup_->Reconcile({});
  EXPECT_EQ(launcher_.Get(1).signals, std::vector<int>{SIGTERM});
  EXPECT_TRUE(sup_->Reports().empty());  // being stopped: not reported
  clock_.Advance(4'000'000);
  sup_->Poll();
  EXPECT_EQ(launcher_.Get(1).signals.size(), 1u);
  clock_.Advance(1'000'000);
  sup_->Poll();
  EXPECT_EQ(launcher_.Get(1).signals, (std::vector<int>{SIGTERM, SIGKILL}));
  sup_->Poll();
  EXPECT_EQ(sup_->live_workers(), 0);
}

TEST_F(SupervisorTest, StartFailureIsReported) {
  launcher_.FailNextStart();
  sup_->Reconcile({Assign("j1", 1, 0)});
  auto r = sup_->Reports();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].state(), v1::WORKER_STATE_START_FAILED);
  EXPECT_NE(r[0].message().find("kp-train"), std::string::npos);
}

TEST_F(SupervisorTest, ConfigPathMustStayUnderTheConfigRoot) {
  options_.config_root = options_.run_root + "/configs";
  std::filesystem::create_directories(options_.config_root);
  Supervisor sup(&launcher_, &clock_, options_);
  v1::Assignment a = Assign("j2", 1, 0);
  a.set_config_path("../../../etc/passwd");
  sup.Reconcile({a});
  auto r = sup.Reports();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].state(), v1::WORKER_STATE_START_FAILED);
  EXPECT_NE(r[0].message().find("escapes"), std::string::npos) << r[0].message();
}

TEST(RenderWorkerConfig, SpecDecidesLayoutPrecisionDataAndCheckpoints) {
  v1::Assignment a = Assign("j", 1, 0, 8);
  a.set_dp(4);
  a.set_cp(2);
  a.set_cp_mode(v1::CP_MODE_ULYSSES);
  a.set_precision(v1::PRECISION_BF16);
  a.set_checkpoint_every_steps(50);
  auto out = RenderWorkerConfig("model: {d_model: 64}\nparallel: {dp: 1, cp: 1, cp_mode: auto}\nprecision: fp32\n"
                                "training: {steps: 10}\n", a, "/data/shards");
  ASSERT_TRUE(out.ok()) << out.status();
  for (const char* want : {"dp: 4", "cp: 2", "cp_mode: ulysses", "precision: bf16", "corpus: path",
                           "path: /data/shards", "checkpoint_every: 50", "d_model: 64", "steps: 10"}) {
    EXPECT_NE(out->find(want), std::string::npos) << want << " in\n" << *out;
  }
  // Unspecified values keep the config's own.
  a.set_cp_mode(v1::CP_MODE_UNSPECIFIED);
  a.set_precision(v1::PRECISION_UNSPECIFIED);
  out = RenderWorkerConfig("parallel: {cp_mode: auto}\nprecision: fp32\n", a, "");
  EXPECT_NE(out->find("cp_mode: auto"), std::string::npos) << *out;
  EXPECT_NE(out->find("precision: fp32"), std::string::npos) << *out;
  EXPECT_EQ(out->find("corpus"), std::string::npos) << *out;
  EXPECT_EQ(out->find("in_process_shrink"), std::string::npos) << *out;
  // JobSpec.in_process_shrink reaches the worker's config, beside its own fault keys.
  a.set_in_process_shrink(true);
  out = RenderWorkerConfig("fault: {shrink_window_ms: 4000}\n", a, "");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NE(out->find("in_process_shrink: true"), std::string::npos) << *out;
  EXPECT_NE(out->find("shrink_window_ms: 4000"), std::string::npos) << *out;
  EXPECT_FALSE(RenderWorkerConfig("[1, 2]", a, "").ok());
  EXPECT_FALSE(RenderWorkerConfig("a: [", a, "").ok());
}

TEST_F(SupervisorTest, StopAllEndsEveryWorker) {
  sup_->Reconcile({Assign("j1", 1, 0), Assign("j1", 1, 1)});
  sup_->StopAll();
  EXPECT_EQ(sup_->live_workers(), 0);
  EXPECT_EQ(launcher_.Get(1).signals, std::vector<int>{SIGTERM});
  EXPECT_EQ(launcher_.Get(2).signals, std::vector<int>{SIGTERM});
}

}  // namespace
}  // namespace kp::agent

namespace kp::agent {
namespace {

TEST(WorkerCommand, PassesSnapshotCadenceTargetsAndResumePoint) {
  SupervisorOptions o;
  o.worker_binary = "/opt/kp/kp-train";
  o.run_root = "/runs";
  v1::Assignment a = Assign("j1", 2, 1);
  auto flags = [&] {
    auto cmd = WorkerCommand(o, a, PathsFor(o, a));
    EXPECT_TRUE(cmd.ok()) << cmd.status();
    std::string joined;
    for (const auto& s : cmd->first) joined += s + " ";
    return joined;
  };
  EXPECT_EQ(flags().find("snapshot"), std::string::npos);  // off unless the job asks
  a.set_snapshot_every_steps(2);
  a.add_snapshot_targets("10.0.0.2:7001");
  a.add_snapshot_targets("10.0.0.3:7001");
  a.set_resume(true);
  a.set_resume_snapshot_address("10.0.0.3:7001");
  a.set_resume_snapshot_step(14);
  const std::string f = flags();
  EXPECT_NE(f.find("--snapshot_every 2 --snapshot_target 10.0.0.2:7001 --snapshot_target 10.0.0.3:7001 "),
            std::string::npos)
      << f;
  EXPECT_NE(f.find("--resume_snapshot 14@10.0.0.3:7001 "), std::string::npos) << f;
}

}  // namespace
}  // namespace kp::agent
