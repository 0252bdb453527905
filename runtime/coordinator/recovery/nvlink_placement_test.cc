#include "runtime/coordinator/recovery/nvlink_placement.h"

#include <gtest/gtest.h>

#include <set>

namespace kp::coordinator::recovery {
namespace {

// 8 GPUs in two NVLink islands {0,1,2,3} and {4,5,6,7} (no links across).
FreeDevices TwoIslands(const std::string& id, const std::vector<int>& free) {
  FreeDevices f{id, {}};
  for (int i : free) {
    v1::Device d;
    d.set_index(i);
    d.set_kind(v1::DEVICE_KIND_CUDA);
    const int base = i < 4 ? 0 : 4;
    for (int p = base; p < base + 4; ++p) {
      if (p != i) d.add_nvlink_peers(p);
    }
    f.devices.push_back(d);
  }
  return f;
}

std::set<int> Indices(const std::vector<Slot>& s, size_t from, size_t n) {
  std::set<int> out;
  for (size_t i = from; i < from + n; ++i) out.insert(s[i].device.index());
  return out;
}

TEST(NvlinkPlacement, CpGroupStaysInsideOneNvlinkIsland) {
  // Free: 0, 1 (island A) and 4, 5, 6 (island B). Index order would pair
  // 0,1,4 for cp=3; the island B triple has 3 links.
  auto slots = PlaceRanksPreferNvlink(1, 3, {TwoIslands("n", {0, 1, 4, 5, 6})});
  ASSERT_TRUE(slots);
  EXPECT_EQ(Indices(*slots, 0, 3), (std::set<int>{4, 5, 6}));
}

TEST(NvlinkPlacement, TwoGroupsEachGetAnIsland) {
  auto slots = PlaceRanksPreferNvlink(2, 4, {TwoIslands("n", {0, 1, 2, 3, 4, 5, 6, 7})});
  ASSERT_TRUE(slots);
  auto g0 = Indices(*slots, 0, 4), g1 = Indices(*slots, 4, 4);
  std::vector<v1::Device> d0, d1;
  for (int i = 0; i < 4; ++i) d0.push_back((*slots)[i].device);
  for (int i = 4; i < 8; ++i) d1.push_back((*slots)[i].device);
  EXPECT_EQ(NvlinkLinks(d0), 6);
  EXPECT_EQ(NvlinkLinks(d1), 6);
}

TEST(NvlinkPlacement, BestFitNodeAndSpreadWhenNoNodeHoldsAGroup) {
  // cp=2: node b (2 free) is the best fit; then cp=3 spreads.
  auto slots = PlaceRanksPreferNvlink(1, 2, {TwoIslands("a", {0, 1, 2, 3}), TwoIslands("b", {4, 5})});
  ASSERT_TRUE(slots);
  EXPECT_EQ((*slots)[0].agent_id, "b");
  EXPECT_EQ((*slots)[1].agent_id, "b");
  slots = PlaceRanksPreferNvlink(1, 3, {TwoIslands("a", {0, 1}), TwoIslands("b", {4, 5})});
  ASSERT_TRUE(slots);
  EXPECT_EQ(slots->size(), 3u);
  EXPECT_FALSE(PlaceRanksPreferNvlink(2, 3, {TwoIslands("a", {0, 1}), TwoIslands("b", {4, 5})}));
}

TEST(NvlinkPlacement, EveryDeviceUsedAtMostOnce) {
  auto slots = PlaceRanksPreferNvlink(3, 2, {TwoIslands("a", {0, 1, 2, 4, 5}), TwoIslands("b", {0, 7})});
  ASSERT_TRUE(slots);
  std::set<std::pair<std::string, int>> seen;
  for (const auto& s : *slots) EXPECT_TRUE(seen.insert({s.agent_id, s.device.index()}).second);
  EXPECT_EQ(seen.size(), 6u);
}

}  // namespace
}  // namespace kp::coordinator::recovery
