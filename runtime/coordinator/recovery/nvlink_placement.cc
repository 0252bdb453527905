#include "runtime/coordinator/recovery/nvlink_placement.h"

#include <algorithm>
#include <set>

namespace kp::coordinator::recovery {
namespace {

bool Linked(const v1::Device& a, const v1::Device& b) {
  for (int p : a.nvlink_peers()) {
    if (p == b.index()) return true;
  }
  for (int p : b.nvlink_peers()) {
    if (p == a.index()) return true;
  }
  return false;
}

// Greedy clique growth from every seed; the best set by internal links, ties
// to the lowest indices (deterministic placements are easier to read).
std::vector<size_t> BestGroup(const std::vector<v1::Device>& pool, int cp) {
  std::vector<size_t> best;
  int best_links = -1;
  for (size_t seed = 0; seed < pool.size(); ++seed) {
    std::vector<size_t> chosen = {seed};
    std::vector<bool> used(pool.size(), false);
    used[seed] = true;
    int links = 0;
    while (static_cast<int>(chosen.size()) < cp) {
      size_t pick = pool.size();
      int pick_gain = -1;
      for (size_t i = 0; i < pool.size(); ++i) {
        if (used[i]) continue;
        int gain = 0;
        for (size_t c : chosen) gain += Linked(pool[i], pool[c]);
        if (gain > pick_gain) {
          pick = i;
          pick_gain = gain;
        }
      }
      used[pick] = true;
      chosen.push_back(pick);
      links += pick_gain;
    }
    if (links > best_links) {
      best_links = links;
      best = chosen;
    }
  }
  std::sort(best.begin(), best.end(), [&](size_t a, size_t b) { return pool[a].index() < pool[b].index(); });
  return best;
}

}  // namespace

int NvlinkLinks(const std::vector<v1::Device>& devices) {
  int n = 0;
  for (size_t i = 0; i < devices.size(); ++i) {
    for (size_t j = i + 1; j < devices.size(); ++j) n += Linked(devices[i], devices[j]);
  }
  return n;
}

std::optional<std::vector<Slot>> PlaceRanksPreferNvlink(int dp, int cp, const std::vector<FreeDevices>& free) {
  if (dp < 1 || cp < 1) return std::nullopt;
  std::vector<FreeDevices> pools = free;
  size_t total = 0;
  for (auto& p : pools) {
    std::sort(p.devices.begin(), p.devices.end(), [](const auto& a, const auto& b) { return a.index() < b.index(); });
    total += p.devices.size();
  }
  if (total < static_cast<size_t>(dp) * cp) return std::nullopt;
  std::vector<Slot> slots;
  slots.reserve(static_cast<size_t>(dp) * cp);
  for (int g = 0; g < dp; ++g) {
    FreeDevices* best = nullptr;
    for (auto& p : pools) {
      if (p.devices.size() >= static_cast<size_t>(cp) && (best == nullptr || p.devices.size() < best->devices.size())) {
        best = &p;
      }
    }
    if (best != nullptr) {
      std::vector<size_t> group = BestGroup(best->devices, cp);
      for (size_t i : group) slots.push_back(Slot{best->agent_id, best->devices[i]});
      std::set<size_t> taken(group.begin(), group.end());
      std::vector<v1::Device> rest;
      for (size_t i = 0; i < best->devices.size(); ++i) {
        if (!taken.count(i)) rest.push_back(best->devices[i]);
      }
      best->devices = std::move(rest);
      continue;
    }
    int need = cp;
    while (need > 0) {
      FreeDevices* largest = nullptr;
      for (auto& p : pools) {
        if (!p.devices.empty() && (largest == nullptr || p.devices.size() > largest->devices.size())) largest = &p;
      }
      if (largest == nullptr) return std::nullopt;
      std::vector<size_t> group = BestGroup(largest->devices, std::min<int>(need, largest->devices.size()));
      std::set<size_t> taken(group.begin(), group.end());
      for (size_t i : group) slots.push_back(Slot{largest->agent_id, largest->devices[i]});
      need -= static_cast<int>(group.size());
      std::vector<v1::Device> rest;
      for (size_t i = 0; i < largest->devices.size(); ++i) {
        if (!taken.count(i)) rest.push_back(largest->devices[i]);
      }
      largest->devices = std::move(rest);
    }
  }
  return slots;
}

}  // namespace kp::coordinator::recovery
