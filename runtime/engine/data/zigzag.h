// Context-parallel sharding of a sequence with the zigzag layout that balances
// causal attention: split the sequence into 2N chunks; rank i of cp world N
// holds chunks i and 2N-1-i, concatenated in that order. The length must be a
// multiple of 2N. Shard inputs and targets (each of length T) the same way.
#ifndef KP_RUNTIME_ENGINE_DATA_ZIGZAG_H_
#define KP_RUNTIME_ENGINE_DATA_ZIGZAG_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/common/status.h"

namespace kp::data {

// Rank `cp_rank`'s part of `x` along `dim` (length L): [.., 2 * L / (2N), ..].
// INVALID_ARGUMENT if L % (2N) != 0 or the rank is out of range.
absl::StatusOr<at::Tensor> ZigzagShard(const at::Tensor& x, int64_t dim, int cp_rank, int cp_world);

// The global positions (int64 [L / N]) of the tokens rank `cp_rank` holds:
// what RoPE must use instead of arange.
absl::StatusOr<at::Tensor> ZigzagPositions(int64_t seq_len, int cp_rank, int cp_world);

// Inverse of ZigzagShard: shards[i] is rank i's part; returns the full tensor.
absl::StatusOr<at::Tensor> ZigzagUnshard(const std::vector<at::Tensor>& shards, int64_t dim);

}  // namespace kp::data

#endif  // KP_RUNTIME_ENGINE_DATA_ZIGZAG_H_
