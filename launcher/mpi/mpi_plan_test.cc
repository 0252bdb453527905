#include "launcher/mpi/mpi_plan.h"

#include <gtest/gtest.h>

namespace kp::launcher {
namespace {

MpiTask Task(int rank, int size, int local_rank) {
  MpiTask t;
  t.rank = rank;
  t.size = size;
  t.local_rank = local_rank;
  t.local_size = 2;
  t.flavour = "openmpi";
  t.job_key = "12345";
  return t;
}

JobShape Shape(int dp, int cp) {
  JobShape s;
  s.dp = dp;
  s.cp = cp;
  return s;
}

absl::StatusOr<std::string> FakeDns(const std::string& host) {
  if (host == "hostA") return std::string("10.1.0.1");
  return absl::NotFoundError("cannot resolve host '" + host + "'");
}

TEST(MpiPlan, RankZeroRunsTheCoordinator) {
  MpiPlanOptions options;
  options.rendezvous_file = "/shared/kp.rdv";
  auto plan0 = MakeMpiPlan(Task(0, 4, 0), Shape(2, 2), options, "hostA", FakeDns);
  ASSERT_TRUE(plan0.ok()) << plan0.status();
  EXPECT_TRUE(plan0->start_coordinator);
  EXPECT_TRUE(plan0->submit);
  EXPECT_TRUE(plan0->needs_rendezvous);
  EXPECT_EQ(plan0->coordinator_target,
            "10.1.0.1:" + std::to_string(PortsForJob(JobKeyNumber("12345")).coordinator));
  auto plan3 = MakeMpiPlan(Task(3, 4, 1), Shape(2, 2), options, "hostB", FakeDns);
  ASSERT_TRUE(plan3.ok()) << plan3.status();  // rank 3 resolves nothing
  EXPECT_FALSE(plan3->start_coordinator);
  EXPECT_FALSE(plan3->submit);
  EXPECT_TRUE(plan3->coordinator_target.empty());
  EXPECT_EQ(plan3->device, 1);
  EXPECT_EQ(plan3->agent_port, PortsForJob(JobKeyNumber("12345")).agent(1));
  EXPECT_EQ(plan3->ports.coordinator, plan0->ports.coordinator);
}

TEST(MpiPlan, ExistingCoordinatorNeedsNoRendezvous) {
  MpiPlanOptions options;
  options.coordinator = "10.9.9.9:7000";
  auto plan = MakeMpiPlan(Task(1, 2, 1), Shape(2, 1), options, "hostB", FakeDns);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->start_coordinator);
  EXPECT_FALSE(plan->needs_rendezvous);
  EXPECT_EQ(plan->coordinator_target, "10.9.9.9:7000");
}

TEST(MpiPlan, WorldMustMatchTheProcessCount) {
  auto plan = MakeMpiPlan(Task(0, 2, 0), Shape(2, 2), {}, "hostA", FakeDns);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("2 x 2 = 4 ranks but mpirun started 2"),
            std::string::npos)
      << plan.status();
  EXPECT_NE(plan.status().message().find("mpirun -np 4"), std::string::npos);
}

TEST(MpiPlan, SeveralRanksNeedAWayToFindRankZero) {
  auto plan = MakeMpiPlan(Task(1, 2, 0), Shape(2, 1), {}, "hostA", FakeDns);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("--rendezvous-file"), std::string::npos);
  // One process alone needs none.
  EXPECT_TRUE(MakeMpiPlan(Task(0, 1, 0), Shape(1, 1), {}, "hostA", FakeDns).ok());
}

TEST(MpiPlan, UnresolvableHostNeedsAnAddress) {
  MpiPlanOptions options;
  options.rendezvous_file = "/shared/x";
  auto plan = MakeMpiPlan(Task(0, 2, 0), Shape(2, 1), options, "nowhere", FakeDns);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("--coordinator-address"), std::string::npos);
  options.coordinator_address = "127.0.0.1";
  options.port_base = 45000;
  plan = MakeMpiPlan(Task(0, 2, 0), Shape(2, 1), options, "nowhere", FakeDns);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->coordinator_target, "127.0.0.1:45000");
}

}  // namespace
}  // namespace kp::launcher
