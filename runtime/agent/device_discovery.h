// Which devices this node offers: CUDA GPUs as nvidia-smi reports them (no
// CUDA library linked: the agent runs on nodes without a driver too), or N
// CPU "slots" for CPU-only runs. The parsers are separate so tests feed them
// captured nvidia-smi output.
#ifndef KP_RUNTIME_AGENT_DEVICE_DISCOVERY_H_
#define KP_RUNTIME_AGENT_DEVICE_DISCOVERY_H_

#include <string>
#include <vector>

#include "kp/v1/agent.pb.h"
#include "runtime/common/status.h"

namespace kp::agent {

// The query the parser expects.
inline constexpr char kNvidiaSmiQuery[] =
    "nvidia-smi --query-gpu=index,name,memory.total,pci.bus_id,compute_cap --format=csv,noheader,nounits";
// Drivers older than 510 know no compute_cap field and refuse the query.
inline constexpr char kNvidiaSmiQueryOld[] =
    "nvidia-smi --query-gpu=index,name,memory.total,pci.bus_id --format=csv,noheader,nounits";

// Parses `kNvidiaSmiQuery` output: "0, NVIDIA H200, 143771, 00000000:18:00.0, 9.0"
// per line, memory in MiB; the compute capability is optional ([N/A] or
// absent: left empty).
absl::StatusOr<std::vector<v1::Device>> ParseNvidiaSmiCsv(const std::string& csv);

// Fills nvlink_peers from `nvidia-smi topo -m`: a cell "NV<k>" in row GPUi,
// column GPUj makes j a peer of i.
absl::Status ParseNvidiaSmiTopology(const std::string& topo, std::vector<v1::Device>* devices);

std::vector<v1::Device> CpuSlots(int n);

// cpu_slots > 0: that many CPU slots. Otherwise runs nvidia-smi; fails (with a
// hint at --cpu_slots) when it is missing or lists no GPU.
absl::StatusOr<std::vector<v1::Device>> DiscoverDevices(int cpu_slots);

}  // namespace kp::agent

#endif  // KP_RUNTIME_AGENT_DEVICE_DISCOVERY_H_
