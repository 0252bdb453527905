// Which attention blocks a set of query tokens needs against a set of key
// tokens under causal masking, from explicit position ranges.
//
// A rank holds tokens as segments: runs of consecutive rows of a local
// [B, H, T, D] tensor that carry consecutive global positions. Between a
// query segment and a key segment, causal masking (key position <= query
// position) makes each key range fully visible, hidden, or a square diagonal
// block; PlanBlocks cuts the pair into those pieces, drops the hidden ones and
// coalesces adjacent fully visible pieces into larger calls (fewer, larger
// kernel launches run closer to the full-attention speed).
#ifndef KP_RUNTIME_PARALLEL_BLOCK_PLAN_H_
#define KP_RUNTIME_PARALLEL_BLOCK_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/parallel/attention_block.h"

namespace kp::parallel {

struct Segment {
  int64_t offset = 0;    // first row in the local tensor
  int64_t length = 0;    // rows
  int64_t position = 0;  // global position of the first row
};

struct BlockTask {
  int64_t q_offset = 0, q_length = 0;  // rows of the local query tensor
  int64_t k_offset = 0, k_length = 0;  // rows of the local key/value tensor
  BlockMask mask = BlockMask::kFull;

  bool operator==(const BlockTask&) const = default;
};

std::string DebugString(const BlockTask& task);

// causal == false: every key is visible to every query (one full block per
// pair, coalesced). Segments within one list must not overlap.
std::vector<BlockTask> PlanBlocks(const std::vector<Segment>& q_segments,
                                  const std::vector<Segment>& k_segments, bool causal);

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_BLOCK_PLAN_H_
