#include "launcher/slurm/ports.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

namespace kp::launcher {
namespace {

std::set<int> AllPorts(const JobPorts& p, int nodes) {
  std::set<int> ports = {p.coordinator, p.metrics};
  for (int i = 0; i < nodes; ++i) ports.insert(p.agent(i));
  return ports;
}

TEST(Ports, OneJobsPortsAreDistinctForItsEmulatedNodes) {
  JobPorts p = PortsForJob(12345);
  EXPECT_EQ(AllPorts(p, kAgentPortsPerJob).size(), static_cast<size_t>(kPortsPerJob));
}

TEST(Ports, JobsWithinAWindowNeverCollide) {
  // Any kPortSlots consecutive job ids (Slurm assigns ids sequentially),
  // starting at a random id, use disjoint port sets.
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    int64_t first = static_cast<int64_t>(rng() % 100'000'000) + 1;
    std::set<int> used;
    for (int64_t id = first; id < first + kPortSlots; ++id) {
      for (int port : AllPorts(PortsForJob(id), kAgentPortsPerJob)) {
        ASSERT_TRUE(used.insert(port).second) << "job " << id << " reuses port " << port;
      }
    }
  }
}

TEST(Ports, StayBelowTheEphemeralRangeAndAboveReserved) {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 10000; ++i) {
    int64_t id = static_cast<int64_t>(rng() >> 1);
    for (int port : AllPorts(PortsForJob(id), kAgentPortsPerJob)) {
      ASSERT_GE(port, 1024);
      ASSERT_LT(port, 32768) << "job " << id;
    }
  }
}

TEST(Ports, DeterministicAndCongruentIdsCollide) {
  EXPECT_EQ(PortsForJob(99).coordinator, PortsForJob(99).coordinator);
  // The documented limit: ids kPortSlots apart share a block.
  EXPECT_EQ(PortsForJob(99).coordinator, PortsForJob(99 + kPortSlots).coordinator);
}

TEST(Ports, FixedBase) {
  JobPorts p = PortsAt(40000);
  EXPECT_EQ(p.coordinator, 40000);
  EXPECT_EQ(p.metrics, 40001);
  EXPECT_EQ(p.agent(0), 40002);
  EXPECT_EQ(p.agent(1), 40003);
}

}  // namespace
}  // namespace kp::launcher
