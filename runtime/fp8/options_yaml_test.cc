#include "runtime/fp8/options_yaml.h"

#include <gtest/gtest.h>

namespace kp::fp8 {
namespace {

absl::StatusOr<ParsedFp8Config> Parse(const std::string& yaml) {
  return ParseFp8Config(YAML::Load(yaml)["fp8"], "job.yaml");
}

TEST(Fp8ConfigYaml, MissingSectionGivesDefaults) {
  auto c = ParseFp8Config(YAML::Load("precision: fp8")["fp8"], "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->options.recipe, Fp8Recipe::kDelayed);
  EXPECT_EQ(c->options.amax_history_len, 16);
  EXPECT_TRUE(c->autotune);
}

TEST(Fp8ConfigYaml, ReadsEveryField) {
  auto c = Parse(R"(
fp8:
  recipe: current
  amax_history_len: 32
  margin: 1
  allow_fallback: true
  fp8_lm_head: true
  autotune: false
  autotune_iters: 7
  min_speedup: 1.1
  fast_accum_forward: false
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->options.recipe, Fp8Recipe::kCurrent);
  EXPECT_EQ(c->options.amax_history_len, 32);
  EXPECT_EQ(c->options.margin, 1);
  EXPECT_TRUE(c->options.allow_fallback);
  EXPECT_TRUE(c->options.fp8_lm_head);
  EXPECT_FALSE(c->autotune);
  EXPECT_EQ(c->options.autotune_iters, 7);
  EXPECT_DOUBLE_EQ(c->options.min_speedup, 1.1);
  EXPECT_FALSE(c->options.fast_accum_forward);
}

TEST(Fp8ConfigYaml, ErrorsNameTheFieldAndFile) {
  struct Case {
    const char* yaml;
    const char* want;
  } cases[] = {
      {"fp8: {recipee: delayed}", "job.yaml: fp8.recipee: unknown field"},
      {"fp8: {recipe: blockwise}", "fp8.recipe"},
      {"fp8: {amax_history_len: many}", "fp8.amax_history_len: expected an integer"},
      {"fp8: {amax_history_len: 0}", "amax_history_len must be >= 1"},
      {"fp8: {allow_fallback: maybe}", "fp8.allow_fallback: expected true or false"},
      {"fp8: [1, 2]", "fp8: expected a mapping"},
  };
  for (const Case& c : cases) {
    auto r = Parse(c.yaml);
    ASSERT_FALSE(r.ok()) << c.yaml;
    EXPECT_NE(r.status().message().find(c.want), std::string::npos) << r.status() << " for " << c.yaml;
  }
}

}  // namespace
}  // namespace kp::fp8
