#include "runtime/parallel/data_parallel.h"

#include <cstdint>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/comm/log.h"
#include "runtime/comm/reduce_values.h"

namespace kp::parallel {

using torch::autograd::variable_list;

GradientReducer::GradientReducer(comm::Communicator* comm, std::vector<at::Tensor> params,
                                 size_t bucket_bytes)
    : comm_(comm), params_(std::move(params)) {
  KP_CHECK(comm_ != nullptr);
  const int n = static_cast<int>(params_.size());
  bucket_of_.assign(n, -1);
  slot_of_.assign(n, -1);
  ready_.assign(n, false);
  // Reverse registration order: the last layers' gradients come first.
  size_t bytes = 0;
  for (int i = n - 1; i >= 0; --i) {
    const at::Tensor& p = params_[i];
    KP_CHECK(p.defined() && p.requires_grad() && p.is_leaf());
    const bool fits = !buckets_.empty() && bucket_bytes > 0 && bytes < bucket_bytes &&
                      params_[buckets_.back().params[0]].scalar_type() == p.scalar_type() &&
                      params_[buckets_.back().params[0]].device() == p.device();
    if (!fits) {
      buckets_.emplace_back();
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    const int64_t offset = b.offsets.empty() ? 0 : b.offsets.back() + params_[b.params.back()].numel();
    bucket_of_[i] = static_cast<int>(buckets_.size()) - 1;
    slot_of_[i] = static_cast<int>(b.params.size());
    b.params.push_back(i);
    b.offsets.push_back(offset);
    bytes += p.numel() * p.element_size();
  }
  for (Bucket& b : buckets_) {
    const at::Tensor& last = params_[b.params.back()];
    b.flat = at::empty({b.offsets.back() + last.numel()}, last.options().requires_grad(false));
  }
  for (int i = 0; i < n; ++i) {
    std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(params_[i]);
    // Post-hook of AccumulateGrad: runs once .grad holds this backward's sum.
    const uintptr_t key = acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i](const variable_list& outputs, const variable_list&) {
          OnGradReady(i);
          return outputs;
        }));
    hooks_.emplace_back(std::move(acc), key);
  }
}

GradientReducer::~GradientReducer() {
  for (auto& [acc, key] : hooks_) acc->del_post_hook(key);
  for (Bucket& b : buckets_) {
    if (b.work) b.work->Wait().IgnoreError();
  }
}

absl::Status GradientReducer::BroadcastParameters(int root) {
  at::NoGradGuard no_grad;
  for (Bucket& b : buckets_) {
    for (size_t k = 0; k < b.params.size(); ++k) {
      const at::Tensor& p = params_[b.params[k]];
      b.flat.narrow(0, b.offsets[k], p.numel()).copy_(p.detach().reshape({-1}));
    }
    KP_RETURN_IF_ERROR(comm_->Broadcast(b.flat, root));
    for (size_t k = 0; k < b.params.size(); ++k) {
      at::Tensor p = params_[b.params[k]].detach();
      p.copy_(b.flat.narrow(0, b.offsets[k], p.numel()).view(p.sizes()));
    }
  }
  return absl::OkStatus();
}

void GradientReducer::PrepareForBackward(bool last_micro_step) {
  // A reduction left unfinished must not write into buffers we reuse.
  for (Bucket& b : buckets_) {
    if (b.work) b.work->Wait().IgnoreError();
  }
  std::lock_guard<std::mutex> lock(mu_);
  armed_ = last_micro_step;
  finishing_ = false;
  next_to_launch_ = 0;
  launched_in_backward_ = 0;
  std::fill(ready_.begin(), ready_.end(), false);
  for (Bucket& b : buckets_) {
    b.pending = static_cast<int>(b.params.size());
    b.launched = false;
    b.work.reset();
  }
}

void GradientReducer::OnGradReady(int i) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!armed_ || ready_[i]) return;
  ready_[i] = true;
  Bucket& b = buckets_[bucket_of_[i]];
  const at::Tensor& p = params_[i];
  const at::Tensor& g = p.grad();
  at::Tensor slice = b.flat.narrow(0, b.offsets[slot_of_[i]], p.numel());
  if (g.defined()) {
    slice.copy_(g.reshape({-1}));
  } else {
    slice.zero_();
  }
  if (--b.pending == 0) LaunchReadyLocked(/*from_backward=*/!finishing_);
}

void GradientReducer::LaunchReadyLocked(bool from_backward) {
  while (next_to_launch_ < num_buckets() && buckets_[next_to_launch_].pending == 0) {
    Bucket& b = buckets_[next_to_launch_++];
    b.launched = true;
    b.launch_time = std::chrono::steady_clock::now();
    b.work = comm_->AllReduceAsync(b.flat, comm::ReduceOp::kAvg);
    if (from_backward) ++launched_in_backward_;
  }
}

absl::Status GradientReducer::Finish() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!armed_) return absl::OkStatus();
    finishing_ = true;
    // Parameters that got no gradient in the last backward: their .grad (from
    // earlier micro-steps) or zero, so every rank still joins every bucket.
    for (int i = 0; i < static_cast<int>(params_.size()); ++i) {
      if (ready_[i]) continue;
      ready_[i] = true;
      Bucket& b = buckets_[bucket_of_[i]];
      const at::Tensor& g = params_[i].grad();
      at::Tensor slice = b.flat.narrow(0, b.offsets[slot_of_[i]], params_[i].numel());
      if (g.defined()) {
        slice.copy_(g.reshape({-1}));
      } else {
        slice.zero_();
      }
      --b.pending;
    }
    LaunchReadyLocked(/*from_backward=*/false);
    armed_ = false;
  }
  absl::Status first;
  for (int k = 0; k < num_buckets(); ++k) {
    Bucket& b = buckets_[k];
    absl::Status s = b.work ? b.work->Wait() : absl::InternalError("bucket never launched");
    b.work.reset();
    if (!s.ok() && first.ok()) {
      first = absl::Status(s.code(), absl::StrCat("data-parallel gradient reduction, bucket ", k,
                                                  " of ", num_buckets(), ": ", s.message()));
    }
  }
  KP_RETURN_IF_ERROR(first);
  at::NoGradGuard no_grad;
  for (Bucket& b : buckets_) {
    for (size_t k = 0; k < b.params.size(); ++k) {
      at::Tensor& p = params_[b.params[k]];
      at::Tensor avg = b.flat.narrow(0, b.offsets[k], p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(avg);
      } else {
        p.mutable_grad() = avg.clone();
      }
    }
  }
  return absl::OkStatus();
}

std::vector<std::chrono::steady_clock::time_point> GradientReducer::bucket_launch_times() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::chrono::steady_clock::time_point> out;
  for (const Bucket& b : buckets_) out.push_back(b.launch_time);
  return out;
}

absl::StatusOr<DpShare> LayoutForWorld(int64_t global_batch, int64_t micro_batch,
                                                int dp_rank, int dp_world) {
  if (dp_world < 1 || dp_rank < 0 || dp_rank >= dp_world || global_batch % dp_world != 0) {
    return absl::InvalidArgumentError(absl::StrCat("a global batch of ", global_batch,
                                                   " samples cannot be split over ", dp_world,
                                                   " data-parallel ranks"));
  }
  const int64_t share = global_batch / dp_world;
  DpShare l;
  l.dp_rank = dp_rank;
  l.dp_world = dp_world;
  l.micro_batch = std::min(micro_batch, share);
  while (share % l.micro_batch != 0) --l.micro_batch;
  l.grad_accum = share / l.micro_batch;
  return l;
}

ShrinkRecovery::ShrinkRecovery(comm::ReformableCommunicator* comm, ShrinkRecoveryOptions options)
    : comm_(comm), options_(std::move(options)) {
  KP_CHECK(comm_ != nullptr && options_.global_batch > 0 && options_.micro_batch > 0);
}

absl::StatusOr<DpShare> ShrinkRecovery::Recover(int64_t step, const absl::Status& error) {
  const bool peer_failure = absl::IsDeadlineExceeded(error) || absl::IsUnavailable(error) ||
                            absl::IsAborted(error);
  if (!peer_failure) return error;
  auto refuse = [&](const std::string& why) {
    comm::LogError(absl::StrCat("step ", step, ": in-process shrink refused: ", why));
    return absl::Status(error.code(), absl::StrCat(error.message(), "; in-process shrink refused: ",
                                                   why, "; the restart path takes over"));
  };
  if (options_.sharded_optimizer_state) {
    return refuse(
        "ZeRO-1 shards the optimizer state across the data-parallel ranks and the dead rank's "
        "shard is lost with it (restart from the checkpoint instead)");
  }
  comm::LogWarning(absl::StrCat("step ", step, ": data-parallel group of ", comm_->size(),
                                " failed (", error.message(), "); re-forming over the survivors"));
  if (options_.before_reform) options_.before_reform();
  auto reformed = comm_->Reform(options_.agree);
  if (!reformed.ok()) return refuse(std::string(reformed.status().message()));
  const int survivors = static_cast<int>(reformed->survivors.size());
  if (survivors < options_.min_dp) {
    return refuse(absl::StrCat("only ", survivors, " data-parallel ranks survive, fault.min_dp is ",
                               options_.min_dp));
  }
  if (absl::Status agree = CheckSurvivorsAgree(step); !agree.ok()) {
    return refuse(std::string(agree.message()));
  }
  auto layout = LayoutForWorld(options_.global_batch, options_.micro_batch, comm_->rank(),
                               comm_->size());
  if (!layout.ok()) return refuse(std::string(layout.status().message()));
  if (options_.after_reform) {
    if (absl::Status s = options_.after_reform(*layout); !s.ok()) {
      return refuse(std::string(s.message()));
    }
  }
  comm::LogWarning(absl::StrCat(
      "step ", step, ": generation ", reformed->generation, " of the data-parallel group: ranks [",
      absl::StrJoin(reformed->survivors, ","), "] of ", reformed->old_size, " survive; this rank is ",
      layout->dp_rank, " of ", layout->dp_world, ", ", layout->grad_accum, " micro-steps of ",
      layout->micro_batch, " samples; redoing step ", step));
  return *layout;
}

// Everyone's step and a checksum of everyone's weights, max-reduced with
// their negations: equal maxima and minima mean all survivors agree. The
// checksum adds the weights' bit patterns as integers: exact and independent
// of summation order (thread counts), unlike a floating-point sum.
absl::Status ShrinkRecovery::CheckSurvivorsAgree(int64_t step) {
  int64_t sum = 0;
  for (const at::Tensor& p : options_.params) {
    at::Tensor flat = p.detach().contiguous().view(-1);
    at::ScalarType as = at::kByte;
    switch (flat.element_size()) {
      case 2: as = at::kShort; break;
      case 4: as = at::kInt; break;
      case 8: as = at::kLong; break;
      default: break;
    }
    // Unsigned wrap-around: associative, so any order gives the same sum.
    sum = static_cast<int64_t>(static_cast<uint64_t>(sum) +
                               static_cast<uint64_t>(flat.view(as).to(at::kLong).sum().item<int64_t>()));
  }
  sum &= INT64_MAX;  // 63 bits: its negation never overflows
  // {step, -step, sum, -sum} max-reduced in one round trip.
  std::vector<int64_t> v = {step, -step, sum, -sum};
  const c10::Device device =
      !options_.params.empty() && options_.params.front().is_cuda() ? options_.params.front().device() : c10::kCPU;
  KP_RETURN_IF_ERROR(comm::AllReduceValues(*comm_, v, comm::ReduceOp::kMax, device));
  if (v[0] != -v[1]) {
    return absl::AbortedError(absl::StrCat(
        "the survivors stand before different steps (", -v[1], " to ", v[0],
        "): a rank finished the failed all-reduce and updated its weights"));
  }
  if (v[2] != -v[3]) {
    return absl::AbortedError(
        absl::StrCat("the survivors' weights differ (checksums ", -v[3], " to ", v[2], ")"));
  }
  return absl::OkStatus();
}

}  // namespace kp::parallel
