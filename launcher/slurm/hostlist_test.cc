#include "launcher/slurm/hostlist.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kp::launcher {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

struct HostlistCase {
  std::string expression;
  std::vector<std::string> hosts;
};

class HostlistTable : public ::testing::TestWithParam<HostlistCase> {};

TEST_P(HostlistTable, Expands) {
  auto hosts = ExpandHostlist(GetParam().expression);
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  EXPECT_THAT(*hosts, ElementsAreArray(GetParam().hosts)) << GetParam().expression;
}

INSTANTIATE_TEST_SUITE_P(
    Slurm, HostlistTable,
    ::testing::Values(
        HostlistCase{"node7", {"node7"}},
        HostlistCase{"gpu[01-04,07]", {"gpu01", "gpu02", "gpu03", "gpu04", "gpu07"}},
        HostlistCase{"n[1-3,7],login1", {"n1", "n2", "n3", "n7", "login1"}},
        HostlistCase{"n[8-11]", {"n8", "n9", "n10", "n11"}},
        HostlistCase{"n[008-011]", {"n008", "n009", "n010", "n011"}},
        HostlistCase{"a[1-2]b[3-4]", {"a1b3", "a1b4", "a2b3", "a2b4"}},
        HostlistCase{"rack[1-2]-node[01,03],head",
                     {"rack1-node01", "rack1-node03", "rack2-node01", "rack2-node03", "head"}},
        HostlistCase{"n[1-2],m[5],x", {"n1", "n2", "m5", "x"}},
        HostlistCase{"n1,n[2-3]", {"n1", "n2", "n3"}},
        HostlistCase{"[1-2]x", {"1x", "2x"}},
        HostlistCase{"h[0]", {"h0"}}));

struct BadCase {
  std::string expression;
  std::string names;  // the message must quote this part
};

class HostlistBad : public ::testing::TestWithParam<BadCase> {};

TEST_P(HostlistBad, FailsNamingThePart) {
  auto hosts = ExpandHostlist(GetParam().expression);
  ASSERT_FALSE(hosts.ok()) << GetParam().expression;
  EXPECT_EQ(hosts.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(hosts.status().message()), HasSubstr(GetParam().names));
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, HostlistBad,
    ::testing::Values(BadCase{"", "empty expression"}, BadCase{"n[1-3", "unclosed '['"},
                      BadCase{"n1-3]", "']' without '['"}, BadCase{"n[3-1]", "'3-1'"},
                      BadCase{"n[1-x]", "'x'"}, BadCase{"n[a]", "'a'"},
                      BadCase{"n[]", "empty brackets"}, BadCase{"n[1,,2]", "empty range"},
                      BadCase{"n1,,n2", "empty host name"}, BadCase{"n[1-[2]]", "nested"},
                      BadCase{"n[1-99999999999]", "99999999999"},
                      BadCase{"n[1-100000]", "more than 65536"},
                      BadCase{"a[1-300]b[1-300]", "more than 65536"}));

TEST(TasksPerNode, ExpandsRepeats) {
  auto counts = ExpandTasksPerNode("2(x3),1");
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_THAT(*counts, ElementsAre(2, 2, 2, 1));
  counts = ExpandTasksPerNode("1(x2)");
  ASSERT_TRUE(counts.ok());
  EXPECT_THAT(*counts, ElementsAre(1, 1));
  counts = ExpandTasksPerNode("4,3,2(x2),8");
  ASSERT_TRUE(counts.ok());
  EXPECT_THAT(*counts, ElementsAre(4, 3, 2, 2, 8));
}

TEST(TasksPerNode, MalformedNamesThePart) {
  for (const auto& [text, part] : std::vector<std::pair<std::string, std::string>>{
           {"", "empty"},
           {"2(x3", "'2(x3'"},
           {"2(3)", "'2(3)'"},
           {"x,1", "'x'"},
           {"1,,2", "''"},
           {"0", "'0'"},
           {"2(x0)", "'2(x0)'"},
           {"-1", "'-1'"}}) {
    auto counts = ExpandTasksPerNode(text);
    ASSERT_FALSE(counts.ok()) << text;
    EXPECT_THAT(std::string(counts.status().message()), HasSubstr(part)) << text;
  }
}

}  // namespace
}  // namespace kp::launcher
