#include "runtime/parallel/block_plan.h"

#include <algorithm>

#include <string>

namespace kp::parallel {
namespace {

// Both lists identical and positions increasing with rows: then "key position
// <= query position" is exactly "key row <= query row", one causal call over
// all rows (the diagonal step of a zigzag ring: chunks i and 2N-1-i).
bool IsOneCausalBlock(const std::vector<Segment>& q, const std::vector<Segment>& k) {
  if (q.size() != k.size() || q.empty()) return false;
  int64_t row = q.front().offset, last_end_pos = -1;
  for (size_t i = 0; i < q.size(); ++i) {
    const Segment& a = q[i];
    const Segment& b = k[i];
    if (a.offset != b.offset || a.length != b.length || a.position != b.position) return false;
    if (a.offset != row || a.position < last_end_pos) return false;
    row = a.offset + a.length;
    last_end_pos = a.position + a.length;
  }
  return true;
}

bool TryCoalesce(const BlockTask& a, const BlockTask& b, BlockTask* merged) {
  if (a.mask != BlockMask::kFull || b.mask != BlockMask::kFull) return false;
  if (a.q_offset == b.q_offset && a.q_length == b.q_length) {
    if (a.k_offset + a.k_length == b.k_offset || b.k_offset + b.k_length == a.k_offset) {
      *merged = a;
      merged->k_offset = std::min(a.k_offset, b.k_offset);
      merged->k_length = a.k_length + b.k_length;
      return true;
    }
  }
  if (a.k_offset == b.k_offset && a.k_length == b.k_length) {
    if (a.q_offset + a.q_length == b.q_offset || b.q_offset + b.q_length == a.q_offset) {
      *merged = a;
      merged->q_offset = std::min(a.q_offset, b.q_offset);
      merged->q_length = a.q_length + b.q_length;
      return true;
    }
  }
  return false;
}

void Coalesce(std::vector<BlockTask>& tasks) {
  bool changed = true;
  while (changed) {
    changed = false;
    for (size_t i = 0; i < tasks.size() && !changed; ++i) {
      for (size_t j = i + 1; j < tasks.size() && !changed; ++j) {
        BlockTask merged;
        if (TryCoalesce(tasks[i], tasks[j], &merged)) {
          tasks[i] = merged;
          tasks.erase(tasks.begin() + static_cast<std::ptrdiff_t>(j));
          changed = true;
        }
      }
    }
  }
}

// Cuts one (query segment, key segment) pair by causal visibility.
void PlanPair(const Segment& q, const Segment& k, std::vector<BlockTask>& out) {
  const int64_t qs = q.position, qe = q.position + q.length;
  const int64_t ks = k.position, ke = k.position + k.length;
  auto q_row = [&](int64_t pos) { return q.offset + (pos - qs); };
  auto k_row = [&](int64_t pos) { return k.offset + (pos - ks); };
  // Keys strictly before every query: fully visible.
  const int64_t full_end = std::min(ke, qs);
  if (ks < full_end) {
    out.push_back({q.offset, q.length, k.offset, full_end - ks, BlockMask::kFull});
  }
  // Keys at the queries' own positions: a square causal block, and fully
  // visible to the queries after it.
  const int64_t a = std::max(ks, qs), b = std::min(ke, qe);
  if (a < b) {
    out.push_back({q_row(a), b - a, k_row(a), b - a, BlockMask::kCausal});
    if (b < qe) out.push_back({q_row(b), qe - b, k_row(a), b - a, BlockMask::kFull});
  }
  // Keys after every query are hidden.
}

}  // namespace

std::string DebugString(const BlockTask& t) {
  return "q[" + std::to_string(t.q_offset) + "+" + std::to_string(t.q_length) + "] k[" +
         std::to_string(t.k_offset) + "+" + std::to_string(t.k_length) + "] " +
         (t.mask == BlockMask::kCausal ? "causal" : "full");
}

std::vector<BlockTask> PlanBlocks(const std::vector<Segment>& q_segments,
                                  const std::vector<Segment>& k_segments, bool causal) {
  std::vector<BlockTask> tasks;
  if (causal && IsOneCausalBlock(q_segments, k_segments)) {
    const int64_t rows = q_segments.back().offset + q_segments.back().length -
                         q_segments.front().offset;
    tasks.push_back({q_segments.front().offset, rows, k_segments.front().offset, rows,
                     BlockMask::kCausal});
    return tasks;
  }
  for (const Segment& q : q_segments) {
    for (const Segment& k : k_segments) {
      if (q.length == 0 || k.length == 0) continue;
      if (causal) {
        PlanPair(q, k, tasks);
      } else {
        tasks.push_back({q.offset, q.length, k.offset, k.length, BlockMask::kFull});
      }
    }
  }
  Coalesce(tasks);
  return tasks;
}

}  // namespace kp::parallel
