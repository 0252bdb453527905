// Reduction arithmetic shared by the backends that reduce on the host.
#ifndef KP_RUNTIME_COMM_REDUCE_MATH_H_
#define KP_RUNTIME_COMM_REDUCE_MATH_H_

#include <string>

#include <ATen/core/Tensor.h>

#include "runtime/comm/communicator.h"
#include "runtime/common/status.h"

namespace kp::comm {

std::string OpName(ReduceOp op);

// acc <- acc (op) x, elementwise, in place (kAvg accumulates a sum).
void Accumulate(at::Tensor& acc, const at::Tensor& x, ReduceOp op);

// Divides a sum by n for kAvg (integers: truncating division); no-op otherwise.
void FinishAverage(at::Tensor& t, ReduceOp op, int n);

// Contiguity and size checks with messages naming the op and rank.
absl::Status CheckContiguous(const at::Tensor& t, const char* op, int rank);
absl::Status CheckNumel(const at::Tensor& t, int64_t expected, const char* what, const char* op,
                        int rank);

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_REDUCE_MATH_H_
