#include "launcher/mpi/mpi_env.h"

#include <gtest/gtest.h>

#include <set>

#include "launcher/slurm/ports.h"

namespace kp::launcher {
namespace {

TEST(MpiEnv, OpenMpi) {
  auto task = ParseMpiTask(MapEnvironment({{"OMPI_COMM_WORLD_RANK", "3"},
                                           {"OMPI_COMM_WORLD_SIZE", "4"},
                                           {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                           {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                                           {"OMPI_MCA_ess_base_jobid", "430440449"},
                                           {"PMIX_RANK", "3"},
                                           {"PMIX_NAMESPACE", "430440449"}}));
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->flavour, "openmpi");
  EXPECT_EQ(task->rank, 3);
  EXPECT_EQ(task->size, 4);
  EXPECT_EQ(task->local_rank, 1);
  EXPECT_EQ(task->local_size, 2);
  EXPECT_EQ(task->job_key, "430440449");
  // OpenMPI ids of successive mpiruns differ in their high bits; their port
  // blocks must still spread.
  std::set<int> coordinator_ports;
  for (int64_t launcher = 1; launcher <= 64; ++launcher) {
    coordinator_ports.insert(
        PortsForJob(JobKeyNumber(std::to_string((launcher << 16) | 1))).coordinator);
  }
  EXPECT_GT(coordinator_ports.size(), 55u);
}

TEST(MpiEnv, HydraPmi) {
  auto task = ParseMpiTask(MapEnvironment(
      {{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}, {"MPI_LOCALRANKID", "0"}, {"PMI_KVSNAME", "kvs_9"}}));
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->flavour, "hydra");
  EXPECT_EQ(task->rank, 1);
  EXPECT_EQ(task->size, 2);
  EXPECT_EQ(task->local_rank, 0);
  EXPECT_EQ(task->local_size, 0);
  EXPECT_EQ(task->job_key, "kvs_9");
  // A non-numeric key hashes to the same number in every process.
  EXPECT_EQ(JobKeyNumber("kvs_9"), JobKeyNumber(std::string("kvs_") + "9"));
  EXPECT_NE(JobKeyNumber("kvs_9"), JobKeyNumber("kvs_8"));
  EXPECT_GE(JobKeyNumber("kvs_9"), 0);
}

TEST(MpiEnv, PmiWithoutLocalRankDefaultsToZero) {
  auto task = ParseMpiTask(MapEnvironment({{"PMI_RANK", "0"}, {"PMI_SIZE", "1"}}));
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->local_rank, 0);
  EXPECT_EQ(task->job_key, "");
}

TEST(MpiEnv, NotUnderMpirun) {
  auto task = ParseMpiTask(MapEnvironment({{"SLURM_JOB_ID", "5"}}));
  ASSERT_FALSE(task.ok());
  EXPECT_EQ(task.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(task.status().message().find("mpirun -np N kprun mpi"), std::string::npos);
}

TEST(MpiEnv, InconsistentValuesNameTheVariable) {
  struct Case {
    std::map<std::string, std::string> env;
    std::string named;
  };
  for (const Case& c : std::vector<Case>{
           {{{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "2"}},
            "OMPI_COMM_WORLD_RANK=2 is not below OMPI_COMM_WORLD_SIZE=2"},
           {{{"OMPI_COMM_WORLD_RANK", "0"}}, "OMPI_COMM_WORLD_SIZE is not"},
           {{{"PMI_SIZE", "4"}}, "PMI_SIZE is set but PMI_RANK"},
           {{{"PMI_RANK", "x"}, {"PMI_SIZE", "4"}}, "PMI_RANK='x'"},
           {{{"PMI_RANK", "0"}, {"PMI_SIZE", "0"}}, "PMI_SIZE=0"},
           {{{"OMPI_COMM_WORLD_RANK", "0"},
             {"OMPI_COMM_WORLD_SIZE", "2"},
             {"OMPI_COMM_WORLD_LOCAL_RANK", "2"},
             {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}},
            "OMPI_COMM_WORLD_LOCAL_RANK=2"},
           {{{"OMPI_COMM_WORLD_RANK", "0"},
             {"OMPI_COMM_WORLD_SIZE", "2"},
             {"OMPI_COMM_WORLD_LOCAL_SIZE", "3"}},
            "OMPI_COMM_WORLD_LOCAL_SIZE=3 exceeds"}}) {
    auto task = ParseMpiTask(MapEnvironment(c.env));
    ASSERT_FALSE(task.ok()) << c.named;
    EXPECT_NE(task.status().message().find(c.named), std::string::npos) << task.status();
  }
}

}  // namespace
}  // namespace kp::launcher
