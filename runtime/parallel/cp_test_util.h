// Test helpers for context parallelism: N in-process ranks (threads over the
// comm colleague's FakeWorld) and a float64 reference of full attention that
// shares no code with the implementation under test.
#ifndef KP_RUNTIME_PARALLEL_CP_TEST_UTIL_H_
#define KP_RUNTIME_PARALLEL_CP_TEST_UTIL_H_

#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/comm/communicator.h"
#include "runtime/comm/run_ranks.h"

namespace kp::parallel::testing {

using comm::testing::RunRanks;

struct AttentionProblem {
  at::Tensor q, k, v, dout;  // full sequence, float64, [B, H(kv), T, D]
};

// Seeded random inputs (normal, never zeros).
AttentionProblem MakeProblem(int64_t batch, int64_t heads, int64_t kv_heads, int64_t seq,
                             int64_t head_dim, uint64_t seed);

struct AttentionResult {
  at::Tensor out, dq, dk, dv;
};

// Full attention by the textbook formula in float64 with autograd:
// softmax(q k^T * scale + causal mask) v, K/V repeated for GQA.
AttentionResult ReferenceAttention(const AttentionProblem& p, bool causal);

double MaxAbsError(const at::Tensor& a, const at::Tensor& b);

}  // namespace kp::parallel::testing

#endif  // KP_RUNTIME_PARALLEL_CP_TEST_UTIL_H_
