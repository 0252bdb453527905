// Runs the libFuzzer target on 20,000 deterministic mutations of valid and
// invalid seed specs, so the target builds and holds its properties in every
// gcc test run (real coverage-guided fuzzing: fuzz_spec_validation.sh).
#include <gtest/gtest.h>

#include <random>

#include "runtime/coordinator/spec_validation.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace kp::coordinator {
namespace {

std::vector<std::string> Seeds() {
  std::vector<std::string> out;
  v1::JobSpec s;
  s.set_name("tiny");
  s.set_config_yaml("model: {}\n");
  s.set_dp(2);
  s.set_cp(2);
  s.set_steps(10);
  s.set_data_path("shards/a");
  s.mutable_checkpoint()->set_dir("ck");
  out.push_back(s.SerializeAsString());
  s.set_data_path("../../etc/passwd");
  out.push_back(s.SerializeAsString());
  s.set_config_path("../x.yaml");
  s.set_dp(-1);
  out.push_back(s.SerializeAsString());
  (*s.mutable_labels())["k"] = std::string(100, 'v');
  out.push_back(s.SerializeAsString());
  return out;
}

TEST(SpecValidationFuzz, MutatedSeedsKeepTheProperties) {
  std::mt19937 rng(1234);
  const auto seeds = Seeds();
  int accepted_parse = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string input = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !input.empty(); ++e) {
      const size_t at = rng() % input.size();
      switch (rng() % 4) {
        case 0: input[at] = static_cast<char>(rng()); break;
        case 1: input.erase(at, 1 + rng() % 3); break;
        case 2: input.insert(at, 1, static_cast<char>(rng())); break;
        default: input.resize(at); break;
      }
    }
    v1::JobSpec probe;
    accepted_parse += probe.ParseFromString(input);
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  }
  EXPECT_GT(accepted_parse, 1000);  // the mutations reach validation, not just the parser
}

}  // namespace
}  // namespace kp::coordinator
