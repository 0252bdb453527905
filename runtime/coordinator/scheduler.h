// Placement: which device of which agent runs each rank of a job. A pure
// function of the job's layout and the free devices, so it is tested without
// a coordinator.
//
// Ranks are dp-major: rank = dp_index * cp + cp_index. The cp ranks of one
// group exchange activations every layer (ring attention), so a group goes on
// one node whenever some node has cp free devices (best fit: the node with the
// fewest free devices that still holds the group, keeping big holes for big
// groups). Only when no node can hold a group is it spread, over the nodes
// with the most free devices first. dp groups only all-reduce gradients once
// per step and may span nodes freely.
#ifndef KP_RUNTIME_COORDINATOR_SCHEDULER_H_
#define KP_RUNTIME_COORDINATOR_SCHEDULER_H_

#include <optional>
#include <string>
#include <vector>

#include "kp/v1/agent.pb.h"

namespace kp::coordinator {

struct FreeDevices {
  std::string agent_id;
  std::vector<v1::Device> devices;  // free devices of one kind
};

struct Slot {
  std::string agent_id;
  v1::Device device;
};

// One slot per rank (index = rank), or nullopt when fewer than dp * cp
// devices are free.
std::optional<std::vector<Slot>> PlaceRanks(int dp, int cp, const std::vector<FreeDevices>& free);

}  // namespace kp::coordinator

#endif  // KP_RUNTIME_COORDINATOR_SCHEDULER_H_
