#include "runtime/parallel/cp_simulation.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "runtime/parallel/cp_test_util.h"
#include "runtime/parallel/zigzag.h"

namespace kp::parallel {
namespace {

// The one-device simulation computes what the ring computes: full attention.
TEST(CpSimulation, MatchesFullAttention) {
  at::set_num_threads(1);
  const testing::AttentionProblem p = testing::MakeProblem(1, 4, 2, 64, 8, 61);
  const testing::AttentionResult ref = testing::ReferenceAttention(p, true);
  for (int cp : {1, 2, 4, 8}) {
    std::vector<at::Tensor> q, k, v, d;
    for (int r = 0; r < cp; ++r) {
      q.push_back(*ZigzagShard(p.q, 2, cp, r));
      k.push_back(*ZigzagShard(p.k, 2, cp, r));
      v.push_back(*ZigzagShard(p.v, 2, cp, r));
      d.push_back(*ZigzagShard(p.dout, 2, cp, r));
    }
    const SimulatedRanks s = SimulateRingAttention(q, k, v, d, LocalAttentionOptions{});
    EXPECT_LT(testing::MaxAbsError(*ZigzagUnshard(s.out, 2), ref.out), 1e-10) << cp;
    EXPECT_LT(testing::MaxAbsError(*ZigzagUnshard(s.dq, 2), ref.dq), 1e-10) << cp;
    EXPECT_LT(testing::MaxAbsError(*ZigzagUnshard(s.dk, 2), ref.dk), 1e-10) << cp;
    EXPECT_LT(testing::MaxAbsError(*ZigzagUnshard(s.dv, 2), ref.dv), 1e-10) << cp;
  }
}

}  // namespace
}  // namespace kp::parallel
