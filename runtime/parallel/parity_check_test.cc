#include "runtime/parallel/parity_check.h"

#include <mutex>

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "runtime/parallel/cp_test_util.h"

namespace kp::parallel {
namespace {

std::vector<absl::Status> RunParity(int cp, const ParityConfig& config) {
  std::vector<absl::Status> results(cp);
  testing::RunRanks(cp, [&](int rank, comm::Communicator& comm) {
    results[rank] = CheckCpParity(comm, config);
  });
  return results;
}

TEST(ParityCheck, PassesForEveryMode) {
  at::set_num_threads(1);
  for (CpMode mode : {CpMode::kRing, CpMode::kAllGather, CpMode::kUlysses, CpMode::kAuto}) {
    ParityConfig config;
    config.options.mode = mode;
    for (const absl::Status& st : RunParity(4, config)) EXPECT_TRUE(st.ok()) << st;
  }
}

TEST(ParityCheck, CatchesABrokenMergeAndNamesIt) {
  at::set_num_threads(1);
  ParityConfig config;
  config.options.mode = CpMode::kRing;
  config.options.merge = MergeMode::kBrokenForTesting;
  const auto results = RunParity(2, config);
  for (int r = 0; r < 2; ++r) {
    const absl::Status& st = results[r];
    ASSERT_FALSE(st.ok()) << "rank " << r;
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
    const std::string msg(st.message());
    EXPECT_NE(msg.find("out: max abs error"), std::string::npos) << msg;
    EXPECT_NE(msg.find("max rel error"), std::string::npos) << msg;
    EXPECT_NE(msg.find("mode ring, cp 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Refusing to train"), std::string::npos) << msg;
  }
  // Every rank refuses with the same verdict.
  EXPECT_EQ(results[0].message(), results[1].message());
}

TEST(ParityCheck, RejectsAnInvalidLayout) {
  at::set_num_threads(1);
  ParityConfig config;
  config.seq_len = 12;  // not a multiple of 2 * 4
  for (const absl::Status& st : RunParity(4, config)) {
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  }
}

}  // namespace
}  // namespace kp::parallel
