#include "runtime/engine/checkpoint/rng_state.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace kp::ckpt {
namespace {

TEST(RngState, RestoreReplaysTheSameDraws) {
  at::manual_seed(31);
  at::randn({10});
  const std::string state = CaptureCpuRngState();
  ASSERT_FALSE(state.empty());
  at::Tensor a = at::randn({64});
  at::Tensor b = at::rand({7});
  at::randn({100});  // the generator moves on
  ASSERT_TRUE(RestoreCpuRngState(state).ok());
  EXPECT_TRUE(at::equal(at::randn({64}), a));
  EXPECT_TRUE(at::equal(at::rand({7}), b));
}

TEST(RngState, RejectsGarbage) {
  EXPECT_EQ(RestoreCpuRngState("not a state").code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kp::ckpt
