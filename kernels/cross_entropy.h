// Cross entropy of bf16 logits, fused: one read of the logits forward, one
// read and one write backward (optionally in place over the logits).
//
// Forward, per row n of logits [rows, vocab]:
//   lse[n]  = log(sum_v exp(logits[n, v]))           (online max/sum in fp32)
//   loss[n] = lse[n] - logits[n, targets[n]]
// A target outside [0, vocab) gives loss NaN for its row (never an
// out-of-bounds read), so a caller's NaN policy sees bad data.
//
// Backward:
//   grad[n, v] = (exp(logits[n, v] - lse[n]) - [v == targets[n]]) * grad_row[n]
// written as bf16; grad may alias logits (same pointer and stride): each
// element is read before it is written by the same thread. Rows with a
// target outside [0, vocab) get NaN gradients.
//
// Accesses are 16-byte vectors (8 bf16) when vocab and the row strides are
// multiples of 8 and the pointers 16-byte aligned, scalar otherwise.
#ifndef KP_KERNELS_CROSS_ENTROPY_H_
#define KP_KERNELS_CROSS_ENTROPY_H_

#include <cstdint>

#include <cuda_runtime_api.h>

namespace kp::kernels {

// logits: bf16 [rows, vocab], row stride logits_stride (>= vocab), last dim
// contiguous. targets: int64 [rows]. loss, lse: fp32 [rows] (device).
cudaError_t CrossEntropyForward(const void* logits, int64_t logits_stride, int64_t rows,
                                int64_t vocab, const int64_t* targets, float* loss, float* lse,
                                cudaStream_t stream);

// grad_row: fp32 device pointer, element n at grad_row[n * grad_row_stride];
// stride 0 broadcasts one scalar (e.g. a 0-dim upstream gradient) with no
// host sync. grad: bf16 [rows, vocab] with row stride grad_stride; may equal
// logits (then grad_stride must equal logits_stride).
cudaError_t CrossEntropyBackward(const void* logits, int64_t logits_stride, int64_t rows,
                                 int64_t vocab, const int64_t* targets, const float* lse,
                                 const float* grad_row, int64_t grad_row_stride, void* grad,
                                 int64_t grad_stride, cudaStream_t stream);

// CPU references in float64 on float logits, contiguous rows.
void CrossEntropyForwardReference(const float* logits, int64_t rows, int64_t vocab,
                                  const int64_t* targets, double* loss, double* lse);
void CrossEntropyBackwardReference(const float* logits, int64_t rows, int64_t vocab,
                                   const int64_t* targets, const float* grad_row,
                                   int64_t grad_row_stride, double* grad);

}  // namespace kp::kernels

#endif  // KP_KERNELS_CROSS_ENTROPY_H_
