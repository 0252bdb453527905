#include "runtime/engine/data/zigzag.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace kp::data {
namespace {

absl::Status CheckLayout(int64_t len, int cp_rank, int cp_world) {
  if (cp_world <= 0 || cp_rank < 0 || cp_rank >= cp_world) {
    return absl::InvalidArgumentError(
        absl::StrCat("zigzag: cp_rank ", cp_rank, " outside [0, ", cp_world, ")"));
  }
  if (len % (2 * int64_t{cp_world}) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("zigzag: sequence length ", len,
                                                   " is not a multiple of 2 x cp_world = ",
                                                   2 * cp_world));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<at::Tensor> ZigzagShard(const at::Tensor& x, int64_t dim, int cp_rank, int cp_world) {
  if (x.dim() == 0) return absl::InvalidArgumentError("zigzag: cannot shard a scalar");
  dim = dim < 0 ? dim + x.dim() : dim;
  if (dim < 0 || dim >= x.dim()) {
    return absl::InvalidArgumentError(absl::StrCat("zigzag: dim out of range for ", x.dim(), "-d tensor"));
  }
  KP_RETURN_IF_ERROR(CheckLayout(x.size(dim), cp_rank, cp_world));
  const int64_t chunk = x.size(dim) / (2 * cp_world);
  return at::cat({x.narrow(dim, cp_rank * chunk, chunk),
                  x.narrow(dim, (2 * cp_world - 1 - cp_rank) * chunk, chunk)},
                 dim);
}

absl::StatusOr<at::Tensor> ZigzagPositions(int64_t seq_len, int cp_rank, int cp_world) {
  KP_RETURN_IF_ERROR(CheckLayout(seq_len, cp_rank, cp_world));
  return ZigzagShard(at::arange(seq_len, at::TensorOptions().dtype(at::kLong)), 0, cp_rank, cp_world);
}

absl::StatusOr<at::Tensor> ZigzagUnshard(const std::vector<at::Tensor>& shards, int64_t dim) {
  const int n = static_cast<int>(shards.size());
  if (n == 0) return absl::InvalidArgumentError("zigzag: no shards");
  const int64_t nd = shards[0].dim();
  dim = dim < 0 ? dim + nd : dim;
  if (dim < 0 || dim >= nd) return absl::InvalidArgumentError("zigzag: dim out of range");
  const int64_t local = shards[0].size(dim);
  if (local % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("zigzag: shard length ", local, " is odd"));
  }
  for (int i = 1; i < n; ++i) {
    if (shards[i].sizes() != shards[0].sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("zigzag: shard ", i, " has shape ",
                                                     c10::str(shards[i].sizes()), ", shard 0 ",
                                                     c10::str(shards[0].sizes())));
    }
  }
  const int64_t chunk = local / 2;
  std::vector<at::Tensor> chunks(2 * n);
  for (int i = 0; i < n; ++i) {
    chunks[i] = shards[i].narrow(dim, 0, chunk);
    chunks[2 * n - 1 - i] = shards[i].narrow(dim, chunk, chunk);
  }
  return at::cat(chunks, dim);
}

}  // namespace kp::data
