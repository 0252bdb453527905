// Zigzag (causal load-balanced) sharding along the sequence: the sequence is
// cut into 2N equal chunks and rank i holds chunks i and 2N-1-i, in that
// order, so under causal masking every rank has the same amount of work.
// Position ids (for RoPE) follow the same layout.
#ifndef KP_RUNTIME_PARALLEL_ZIGZAG_H_
#define KP_RUNTIME_PARALLEL_ZIGZAG_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/common/status.h"
#include "runtime/parallel/block_plan.h"

namespace kp::parallel {

// OK when a sequence of seq_len tokens can be zigzag-sharded over cp ranks;
// otherwise says what would be valid.
absl::Status ValidateZigzag(int64_t seq_len, int cp);

// The two segments rank `rank` holds, as rows of its local tensor of
// 2 * chunk rows: {0, chunk, rank*chunk} and {chunk, chunk, (2cp-1-rank)*chunk}.
std::vector<Segment> ZigzagSegments(int rank, int cp, int64_t chunk);

// Global positions of rank's local tokens: int64 [seq_len / cp].
at::Tensor ZigzagPositions(int64_t seq_len, int cp, int rank);

// Rank's local part of `full` along dimension dim (contiguous copy).
absl::StatusOr<at::Tensor> ZigzagShard(const at::Tensor& full, int64_t dim, int cp, int rank);

// Inverse of ZigzagShard: locals[r] is rank r's part; returns the sequence in
// natural order.
absl::StatusOr<at::Tensor> ZigzagUnshard(const std::vector<at::Tensor>& locals, int64_t dim);

// The same reordering on one tensor: `by_rank` holds rank 0's local part,
// then rank 1's, ... along dim (what an all-gather or all-to-all yields);
// returns natural order, and back. Differentiable (index_select).
at::Tensor ZigzagRankOrderToNatural(const at::Tensor& by_rank, int64_t dim, int cp);
at::Tensor ZigzagNaturalToRankOrder(const at::Tensor& natural, int64_t dim, int cp);

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_ZIGZAG_H_
