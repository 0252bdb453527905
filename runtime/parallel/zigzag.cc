#include "runtime/parallel/zigzag.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace kp::parallel {
namespace {

// natural chunk index held at rank-order chunk slot j (slot 2r: chunk r,
// slot 2r+1: chunk 2cp-1-r).
int64_t ChunkAtSlot(int64_t slot, int cp) {
  const int64_t r = slot / 2;
  return slot % 2 == 0 ? r : 2 * cp - 1 - r;
}

at::Tensor PermutationIndex(int64_t len, int cp, bool to_natural, const at::Device& device) {
  const int64_t chunk = len / (2 * cp);
  std::vector<int64_t> idx(len);
  for (int64_t slot = 0; slot < 2 * cp; ++slot) {
    const int64_t c = ChunkAtSlot(slot, cp);
    for (int64_t i = 0; i < chunk; ++i) {
      // rank-order row slot*chunk+i holds natural row c*chunk+i
      if (to_natural) {
        idx[c * chunk + i] = slot * chunk + i;
      } else {
        idx[slot * chunk + i] = c * chunk + i;
      }
    }
  }
  return at::tensor(idx, at::kLong).to(device);
}

}  // namespace

absl::Status ValidateZigzag(int64_t seq_len, int cp) {
  if (cp < 1) return absl::InvalidArgumentError(absl::StrCat("cp size must be >= 1, got ", cp));
  if (seq_len <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("sequence length must be > 0, got ", seq_len));
  }
  if (cp == 1) return absl::OkStatus();
  if (seq_len % (2 * cp) != 0) {
    const int64_t m = 2 * cp;
    const int64_t lower = seq_len / m * m, upper = lower + m;
    return absl::InvalidArgumentError(absl::StrCat(
        "zigzag context parallelism needs the sequence length divisible by 2*cp = ", m,
        "; got length ", seq_len, " with cp = ", cp, " (nearest valid lengths: ",
        lower > 0 ? absl::StrCat(lower, " or ") : "", upper, ")"));
  }
  return absl::OkStatus();
}

std::vector<Segment> ZigzagSegments(int rank, int cp, int64_t chunk) {
  if (cp == 1) return {{0, 2 * chunk, 0}};
  return {{0, chunk, rank * chunk}, {chunk, chunk, (2 * cp - 1 - rank) * chunk}};
}

at::Tensor ZigzagPositions(int64_t seq_len, int cp, int rank) {
  const int64_t chunk = seq_len / (2 * cp);
  const auto segs = ZigzagSegments(rank, cp, chunk);
  std::vector<at::Tensor> parts;
  for (const Segment& s : segs) parts.push_back(at::arange(s.position, s.position + s.length, at::kLong));
  return at::cat(parts);
}

absl::StatusOr<at::Tensor> ZigzagShard(const at::Tensor& full, int64_t dim, int cp, int rank) {
  if (dim < 0) dim += full.dim();
  if (dim < 0 || dim >= full.dim()) {
    return absl::InvalidArgumentError(absl::StrCat("zigzag dim ", dim, " out of range for a ",
                                                   full.dim(), "-d tensor"));
  }
  if (rank < 0 || rank >= cp) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " not in [0, ", cp, ")"));
  }
  KP_RETURN_IF_ERROR(ValidateZigzag(full.size(dim), cp));
  if (cp == 1) return full.contiguous();
  const int64_t chunk = full.size(dim) / (2 * cp);
  return at::cat({full.narrow(dim, rank * chunk, chunk),
                  full.narrow(dim, (2 * cp - 1 - rank) * chunk, chunk)},
                 dim)
      .contiguous();
}

absl::StatusOr<at::Tensor> ZigzagUnshard(const std::vector<at::Tensor>& locals, int64_t dim) {
  const int cp = static_cast<int>(locals.size());
  if (cp == 0) return absl::InvalidArgumentError("ZigzagUnshard: no local parts");
  if (dim < 0) dim += locals[0].dim();
  const int64_t local_len = locals[0].size(dim);
  if (cp == 1) return locals[0];
  if (local_len % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ZigzagUnshard: local length ", local_len, " is odd"));
  }
  for (int r = 0; r < cp; ++r) {
    if (locals[r].sizes() != locals[0].sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("ZigzagUnshard: rank ", r, " part has shape ",
                                                     c10::str(locals[r].sizes()), ", rank 0 has ",
                                                     c10::str(locals[0].sizes())));
    }
  }
  return ZigzagRankOrderToNatural(at::cat(locals, dim), dim, cp);
}

at::Tensor ZigzagRankOrderToNatural(const at::Tensor& by_rank, int64_t dim, int cp) {
  if (cp == 1) return by_rank;
  return by_rank.index_select(dim, PermutationIndex(by_rank.size(dim), cp, true, by_rank.device()));
}

at::Tensor ZigzagNaturalToRankOrder(const at::Tensor& natural, int64_t dim, int cp) {
  if (cp == 1) return natural;
  return natural.index_select(dim, PermutationIndex(natural.size(dim), cp, false, natural.device()));
}

}  // namespace kp::parallel
