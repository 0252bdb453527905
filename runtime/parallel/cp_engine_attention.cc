#include "runtime/parallel/cp_engine_attention.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "runtime/parallel/cp_attention.h"
#include "runtime/parallel/zigzag.h"

namespace kp::parallel {
namespace {

class ContextParallelEngineAttention final : public engine::Attention {
 public:
  ContextParallelEngineAttention(comm::Communicator* comm, const CpOptions& options)
      : comm_(comm), options_(options), local_(engine::MakeLocalAttention()) {}

  at::Tensor Forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const engine::AttentionContext& context) override {
    const int cp = comm_ == nullptr ? 1 : comm_->size();
    if (cp == 1 && context.layout == engine::SequenceLayout::kWhole) {
      return local_->Forward(q, k, v, context);  // cp = 1 costs nothing
    }
    CpOptions options = options_;
    options.causal = context.causal;
    if (context.scale > 0) options.scale = context.scale;
    if (!checked_) {
      const absl::Status st = ValidateCpAttentionContext(context, comm_);
      TORCH_CHECK(st.ok(), st.ToString());
      // Says once per layer object which mode runs and why (spdlog info).
      const absl::StatusOr<CpModeChoice> choice = ResolveCpMode(q, k, cp, options, /*log=*/true);
      TORCH_CHECK(choice.ok(), choice.status().ToString());
      checked_ = true;
    }
    absl::StatusOr<at::Tensor> out = ContextParallelAttention(q, k, v, comm_, options);
    TORCH_CHECK(out.ok(), out.status().ToString());
    return *out;
  }

 private:
  comm::Communicator* comm_;
  CpOptions options_;
  std::unique_ptr<engine::Attention> local_;
  bool checked_ = false;  // the layout is fixed for a job: check it once
};

}  // namespace

absl::Status ValidateCpAttentionContext(const engine::AttentionContext& context,
                                        const comm::Communicator* comm) {
  const int cp = comm == nullptr ? 1 : comm->size();
  const int rank = comm == nullptr ? 0 : comm->rank();
  if (context.cp_size != cp || context.cp_rank != rank) {
    return absl::InvalidArgumentError(absl::StrCat(
        "context-parallel attention: the attention context says rank ", context.cp_rank, " of ",
        context.cp_size, " but the CP communicator is rank ", rank, " of ", cp));
  }
  if (cp == 1) return absl::OkStatus();
  if (context.layout != engine::SequenceLayout::kZigzag) {
    return absl::InvalidArgumentError(absl::StrCat(
        "context-parallel attention needs the zigzag layout (rank r holds chunks r and 2cp-1-r); "
        "the data path gave ",
        context.layout == engine::SequenceLayout::kWhole ? "the whole sequence" : "contiguous chunks",
        " at cp ", cp));
  }
  KP_RETURN_IF_ERROR(ValidateZigzag(context.global_seq_len, cp));
  if (context.positions.defined()) {
    const at::Tensor want = ZigzagPositions(context.global_seq_len, cp, rank);
    if (!at::equal(context.positions.to(at::kCPU, at::kLong), want)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "context-parallel attention: rank ", rank,
          "'s positions do not match the zigzag layout of ", context.global_seq_len,
          " tokens over cp ", cp, " (RoPE and attention would disagree)"));
    }
  }
  return absl::OkStatus();
}

std::unique_ptr<engine::Attention> MakeContextParallelAttention(comm::Communicator* comm,
                                                                const CpOptions& options) {
  return std::make_unique<ContextParallelEngineAttention>(comm, options);
}

}  // namespace kp::parallel
