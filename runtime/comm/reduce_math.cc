#include "runtime/comm/reduce_math.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace kp::comm {

std::string OpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
  }
  return "?";
}

void Accumulate(at::Tensor& acc, const at::Tensor& x, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: acc.add_(x); break;
    case ReduceOp::kMax: at::maximum_out(acc, acc, x); break;
    case ReduceOp::kMin: at::minimum_out(acc, acc, x); break;
  }
}

void FinishAverage(at::Tensor& t, ReduceOp op, int n) {
  if (op != ReduceOp::kAvg || n == 1) return;
  if (at::isFloatingType(t.scalar_type())) {
    t.div_(n);
  } else {
    t.div_(n, "trunc");
  }
}

absl::Status CheckContiguous(const at::Tensor& t, const char* op, int rank) {
  if (!t.defined()) {
    return absl::InvalidArgumentError(absl::StrCat(op, " on rank ", rank, ": undefined tensor"));
  }
  if (!t.is_contiguous()) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, " on rank ", rank, ": tensor must be contiguous"));
  }
  return absl::OkStatus();
}

absl::Status CheckNumel(const at::Tensor& t, int64_t expected, const char* what, const char* op,
                        int rank) {
  if (t.numel() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(op, " on rank ", rank, ": ", what, " has ",
                                                   t.numel(), " elements, expected ", expected));
  }
  return absl::OkStatus();
}

}  // namespace kp::comm
