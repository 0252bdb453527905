#include "runtime/coordinator/scheduler.h"

#include <algorithm>
#include <deque>

namespace kp::coordinator {

std::optional<std::vector<Slot>> PlaceRanks(int dp, int cp, const std::vector<FreeDevices>& free) {
  if (dp < 1 || cp < 1) return std::nullopt;
  size_t total = 0;
  struct Pool {
    std::string agent_id;
    std::deque<v1::Device> devices;
  };
  std::vector<Pool> pools;
  for (const auto& f : free) {
    total += f.devices.size();
    Pool p{f.agent_id, {}};
    std::vector<v1::Device> sorted = f.devices;
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.index() < b.index(); });
    p.devices.assign(sorted.begin(), sorted.end());
    pools.push_back(std::move(p));
  }
  if (total < static_cast<size_t>(dp) * cp) return std::nullopt;

  std::vector<Slot> slots;
  slots.reserve(static_cast<size_t>(dp) * cp);
  auto take = [&](Pool& p) {
    slots.push_back(Slot{p.agent_id, p.devices.front()});
    p.devices.pop_front();
  };
  for (int g = 0; g < dp; ++g) {
    Pool* best = nullptr;
    for (auto& p : pools) {
      if (p.devices.size() >= static_cast<size_t>(cp) && (best == nullptr || p.devices.size() < best->devices.size())) {
        best = &p;
      }
    }
    if (best != nullptr) {
      for (int i = 0; i < cp; ++i) take(*best);
      continue;
    }
    // Spread: largest pools first, so the group touches as few nodes as possible.
    int need = cp;
    while (need > 0) {
      Pool* largest = nullptr;
      for (auto& p : pools) {
        if (!p.devices.empty() && (largest == nullptr || p.devices.size() > largest->devices.size())) largest = &p;
      }
      if (largest == nullptr) return std::nullopt;  // unreachable: total was checked
      while (need > 0 && !largest->devices.empty()) {
        take(*largest);
        --need;
      }
    }
  }
  return slots;
}

}  // namespace kp::coordinator
