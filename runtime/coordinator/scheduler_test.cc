#include "runtime/coordinator/scheduler.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace kp::coordinator {
namespace {

FreeDevices Node(const std::string& id, std::vector<int> indices) {
  FreeDevices f{id, {}};
  for (int i : indices) {
    v1::Device d;
    d.set_index(i);
    d.set_kind(v1::DEVICE_KIND_CUDA);
    f.devices.push_back(d);
  }
  return f;
}

// Every slot distinct, and the number of nodes each cp group touches.
std::vector<int> NodesPerGroup(const std::vector<Slot>& slots, int dp, int cp) {
  std::set<std::string> used;
  for (const auto& s : slots) {
    EXPECT_TRUE(used.insert(s.agent_id + "#" + std::to_string(s.device.index())).second) << "device used twice";
  }
  std::vector<int> out;
  for (int g = 0; g < dp; ++g) {
    std::set<std::string> nodes;
    for (int c = 0; c < cp; ++c) nodes.insert(slots[g * cp + c].agent_id);
    out.push_back(static_cast<int>(nodes.size()));
  }
  return out;
}

TEST(PlaceRanks, WaitsWhenDevicesAreShort) {
  EXPECT_FALSE(PlaceRanks(2, 3, {Node("a", {0, 1}), Node("b", {0, 1, 2})}).has_value());
  EXPECT_FALSE(PlaceRanks(1, 1, {}).has_value());
  EXPECT_TRUE(PlaceRanks(1, 5, {Node("a", {0, 1}), Node("b", {0, 1, 2})}).has_value());
}

TEST(PlaceRanks, PacksEachCpGroupOntoOneNode) {
  // Two 4-GPU nodes, dp=2 x cp=4: each cp group must own one node.
  auto slots = PlaceRanks(2, 4, {Node("a", {0, 1, 2, 3}), Node("b", {0, 1, 2, 3})});
  ASSERT_TRUE(slots.has_value());
  ASSERT_EQ(slots->size(), 8u);
  EXPECT_EQ(NodesPerGroup(*slots, 2, 4), (std::vector<int>{1, 1}));
  EXPECT_NE((*slots)[0].agent_id, (*slots)[4].agent_id);
}

TEST(PlaceRanks, BestFitKeepsBigHolesForBigGroups) {
  // cp=2 groups: the 2-free node is used before the 6-free one, so the
  // 6-free node still holds a later group of 2 without splitting any.
  auto slots = PlaceRanks(4, 2, {Node("big", {0, 1, 2, 3, 4, 5}), Node("small", {6, 7})});
  ASSERT_TRUE(slots.has_value());
  EXPECT_EQ((*slots)[0].agent_id, "small");
  EXPECT_EQ(NodesPerGroup(*slots, 4, 2), (std::vector<int>{1, 1, 1, 1}));
}

TEST(PlaceRanks, SpreadsAGroupOnlyWhenNoNodeHoldsIt) {
  auto slots = PlaceRanks(1, 4, {Node("a", {0, 1}), Node("b", {0, 1, 2}), Node("c", {0})});
  ASSERT_TRUE(slots.has_value());
  // Largest pool first: 3 from b, then 1 more from the next largest (a).
  std::map<std::string, int> count;
  for (const auto& s : *slots) ++count[s.agent_id];
  EXPECT_EQ(count["b"], 3);
  EXPECT_EQ(count["a"], 1);
  EXPECT_EQ(count.count("c"), 0u);
}

TEST(PlaceRanks, RanksAreDpMajorWithAscendingDevices) {
  auto slots = PlaceRanks(2, 2, {Node("a", {3, 1, 2, 0})});
  ASSERT_TRUE(slots.has_value());
  for (int r = 0; r < 4; ++r) EXPECT_EQ((*slots)[r].device.index(), r);
}

}  // namespace
}  // namespace kp::coordinator
