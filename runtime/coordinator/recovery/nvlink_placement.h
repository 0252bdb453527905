// Placement that prefers NVLink for the cp dimension. The cp ranks of one
// group exchange K/V blocks every layer, so they belong on one node (as in
// scheduler.h's PlaceRanks) and, within it, on devices that share NVLink
// links (the agent reports each device's NVLink peers). dp groups only
// all-reduce once per step and may go anywhere.
#ifndef KP_RUNTIME_COORDINATOR_RECOVERY_NVLINK_PLACEMENT_H_
#define KP_RUNTIME_COORDINATOR_RECOVERY_NVLINK_PLACEMENT_H_

#include <optional>
#include <vector>

#include "runtime/coordinator/scheduler.h"

namespace kp::coordinator::recovery {

// Number of NVLink links among `devices` (each unordered pair counted once;
// a link reported by either side counts).
int NvlinkLinks(const std::vector<v1::Device>& devices);

// One slot per rank (dp-major), or nullopt when fewer than dp * cp devices
// are free. Each cp group goes on the node with the fewest free devices that
// still holds it (best fit), on the cp devices of that node with the most
// NVLink links among them; a group no node holds is spread over the largest
// pools first.
std::optional<std::vector<Slot>> PlaceRanksPreferNvlink(int dp, int cp, const std::vector<FreeDevices>& free);

}  // namespace kp::coordinator::recovery

#endif  // KP_RUNTIME_COORDINATOR_RECOVERY_NVLINK_PLACEMENT_H_
