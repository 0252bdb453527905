#include "runtime/parallel/zero1.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

#include "absl/strings/str_cat.h"

namespace kp::parallel {

ShardedAdamW::ShardedAdamW(comm::Communicator* dp, std::vector<at::Tensor> params,
                           AdamWOptions options, std::vector<bool> decay)
    : dp_(dp), params_(std::move(params)), options_(options) {
  KP_CHECK(dp_ != nullptr && !params_.empty());
  KP_CHECK(decay.empty() || decay.size() == params_.size());
  for (const auto& p : params_) {
    KP_CHECK(p.scalar_type() == params_[0].scalar_type() && p.device() == params_[0].device());
    total_ += p.numel();
  }
  const int n = dp_->size();
  shard_ = (total_ + n - 1) / n;
  shard_begin_ = dp_->rank() * shard_;
  const auto opts = params_[0].options().requires_grad(false);
  flat_ = at::zeros({shard_ * n}, opts);
  at::Tensor mask = at::zeros({shard_ * n}, opts);
  int64_t off = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t k = params_[i].numel();
    if (decay.empty() || decay[i]) mask.narrow(0, off, k).fill_(1);
    off += k;
  }
  decay_mask_ = mask.narrow(0, shard_begin_, shard_).clone();
  exp_avg_ = at::zeros({shard_}, opts);
  exp_avg_sq_ = at::zeros({shard_}, opts);
}

absl::Status ShardedAdamW::Step(double lr) {
  at::NoGradGuard no_grad;
  // My shard of the parameters and of the (already dp-averaged) gradients.
  at::Tensor grad = at::zeros({flat_.numel()}, flat_.options());
  int64_t off = 0;
  for (const auto& p : params_) {
    const int64_t k = p.numel();
    flat_.narrow(0, off, k).copy_(p.detach().reshape({-1}));
    if (p.grad().defined()) grad.narrow(0, off, k).copy_(p.grad().reshape({-1}));
    off += k;
  }
  at::Tensor p = flat_.narrow(0, shard_begin_, shard_).clone();
  at::Tensor g = grad.narrow(0, shard_begin_, shard_);
  ++step_;
  const auto& o = options_;
  // torch::optim::AdamW's arithmetic, element for element.
  p.mul_(at::ones_like(p).sub_(decay_mask_, lr * o.weight_decay));
  exp_avg_.lerp_(g, 1 - o.beta1);
  exp_avg_sq_.mul_(o.beta2).addcmul_(g, g, 1 - o.beta2);
  const double bc1 = 1 - std::pow(o.beta1, static_cast<double>(step_));
  const double bc2 = 1 - std::pow(o.beta2, static_cast<double>(step_));
  at::Tensor denom = (exp_avg_sq_.sqrt() / std::sqrt(bc2)).add_(o.eps);
  p.addcdiv_(exp_avg_, denom, -lr / bc1);
  // Everyone's updated shard to everyone.
  at::Tensor gathered = at::empty_like(flat_);
  absl::Status s = dp_->AllGather(p, gathered);
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("ZeRO-1 parameter all-gather: ", s.message()));
  }
  off = 0;
  for (auto& q : params_) {
    const int64_t k = q.numel();
    q.detach().copy_(gathered.narrow(0, off, k).view(q.sizes()));
    off += k;
  }
  return absl::OkStatus();
}

}  // namespace kp::parallel
