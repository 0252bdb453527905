#include "runtime/agent/device_discovery.h"

#include <gtest/gtest.h>

namespace kp::agent {
namespace {

// Captured from `nvidia-smi --query-gpu=index,name,memory.total,pci.bus_id
// --format=csv,noheader,nounits` on a two-GPU H200 node.
constexpr char kCsv[] =
    "0, NVIDIA H200, 143771, 00000000:18:00.0\n"
    "1, NVIDIA H200, 143771, 00000000:2A:00.0\n";

// `nvidia-smi topo -m` of the same node (tabs, trailing legend trimmed), with
// the ANSI underline nvidia-smi prints on a terminal.
constexpr char kTopo[] =
    "\t\x1b[4mGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n"
    "GPU0\t X \tNV18\t0-47\t0\t\tN/A\n"
    "GPU1\tNV18\t X \t0-47\t0\t\tN/A\n"
    "\n"
    "Legend:\n"
    "\n"
    "  X    = Self\n"
    "  NV#  = Connection traversing a bonded set of # NVLinks\n";

TEST(DeviceDiscovery, ParsesComputeCapabilityWhereGiven) {
  // The query with compute_cap (drivers >= 510), and an older GPU.
  auto d = ParseNvidiaSmiCsv("0, NVIDIA H100 80GB HBM3, 81559, 00000000:19:00.0, 9.0\n"
                             "1, NVIDIA A100-SXM4-80GB, 81920, 00000000:2A:00.0, 8.0\n"
                             "2, Tesla V100, 16384, 00000000:3B:00.0, [N/A]\n");
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->size(), 3u);
  EXPECT_EQ((*d)[0].compute_capability(), "9.0");
  EXPECT_EQ((*d)[1].compute_capability(), "8.0");
  EXPECT_EQ((*d)[2].compute_capability(), "");
  EXPECT_EQ((*d)[0].pci_bus_id(), "00000000:19:00.0");
  // The old four-field query still parses, capability unknown.
  auto old = ParseNvidiaSmiCsv(kCsv);
  ASSERT_TRUE(old.ok());
  EXPECT_EQ((*old)[0].compute_capability(), "");
}

TEST(DeviceDiscovery, ParsesNvidiaSmiCsv) {
  auto d = ParseNvidiaSmiCsv(kCsv);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->size(), 2u);
  EXPECT_EQ((*d)[1].index(), 1);
  EXPECT_EQ((*d)[1].model(), "NVIDIA H200");
  EXPECT_EQ((*d)[1].memory_bytes(), 143771LL * 1024 * 1024);
  EXPECT_EQ((*d)[1].pci_bus_id(), "00000000:2A:00.0");
  EXPECT_EQ((*d)[0].kind(), v1::DEVICE_KIND_CUDA);
}

TEST(DeviceDiscovery, RejectsMalformedCsvNamingTheLine) {
  auto d = ParseNvidiaSmiCsv("0, NVIDIA H200, 143771, 00000000:18:00.0\nx, y, z, w\n");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("line 2"), std::string::npos);
  EXPECT_FALSE(ParseNvidiaSmiCsv("only, three, fields\n").ok());
  EXPECT_TRUE(ParseNvidiaSmiCsv("")->empty());
}

TEST(DeviceDiscovery, ParsesNvlinkPeersFromTopology) {
  auto d = *ParseNvidiaSmiCsv(kCsv);
  ASSERT_TRUE(ParseNvidiaSmiTopology(kTopo, &d).ok());
  ASSERT_EQ(d[0].nvlink_peers_size(), 1);
  EXPECT_EQ(d[0].nvlink_peers(0), 1);
  ASSERT_EQ(d[1].nvlink_peers_size(), 1);
  EXPECT_EQ(d[1].nvlink_peers(0), 0);
}

TEST(DeviceDiscovery, PcieOnlyTopologyHasNoPeers) {
  auto d = *ParseNvidiaSmiCsv(kCsv);
  ASSERT_TRUE(ParseNvidiaSmiTopology("\tGPU0\tGPU1\tCPU Affinity\nGPU0\t X \tPHB\t0-7\nGPU1\tPHB\t X \t0-7\n", &d).ok());
  EXPECT_EQ(d[0].nvlink_peers_size(), 0);
  EXPECT_FALSE(ParseNvidiaSmiTopology("garbage\n", &d).ok());
}

TEST(DeviceDiscovery, CpuSlots) {
  auto d = DiscoverDevices(3);
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->size(), 3u);
  EXPECT_EQ((*d)[2].index(), 2);
  EXPECT_EQ((*d)[2].kind(), v1::DEVICE_KIND_CPU);
}

}  // namespace
}  // namespace kp::agent
