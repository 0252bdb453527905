#include "runtime/engine/optimizer.h"

#include <cmath>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace kp::engine {

double LearningRate(const TrainingConfig& t, int64_t step) {
  if (t.warmup_steps > 0 && step < t.warmup_steps) {
    return t.lr * static_cast<double>(step + 1) / static_cast<double>(t.warmup_steps);
  }
  const int64_t decay_steps = t.steps - t.warmup_steps;
  if (decay_steps <= 1) return t.lr;
  double progress = static_cast<double>(step - t.warmup_steps) / static_cast<double>(decay_steps - 1);
  progress = std::min(1.0, std::max(0.0, progress));
  return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + std::cos(M_PI * progress));
}

at::Tensor GlobalGradNorm(const std::vector<at::Tensor>& params) {
  at::Tensor total;
  for (const at::Tensor& p : params) {
    if (!p.grad().defined()) continue;
    const at::ScalarType acc = p.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor sq = p.grad().to(acc).pow(2).sum();
    total = total.defined() ? total + sq : sq;
  }
  if (!total.defined()) return at::zeros({});
  return total.sqrt();
}

void ScaleGradients(const std::vector<at::Tensor>& params, const at::Tensor& factor) {
  for (const at::Tensor& p : params) {
    if (p.grad().defined()) p.mutable_grad().mul_(factor.to(p.grad().scalar_type()));
  }
}

Optimizer::Optimizer(Transformer& model, const TrainingConfig& t) {
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    names_.push_back(item.key());
    params_.push_back(item.value());
  }
  auto options = [&](double wd) {
    auto o = std::make_unique<torch::optim::AdamWOptions>(t.lr);
    o->betas({t.beta1, t.beta2}).eps(t.eps).weight_decay(wd);
    return o;
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(model.DecayParameters(), options(t.weight_decay));
  groups.emplace_back(model.NoDecayParameters(), options(0.0));
  adamw_ = std::make_unique<torch::optim::AdamW>(std::move(groups),
                                                 torch::optim::AdamWOptions(t.lr));
}

void Optimizer::SetLearningRate(double lr) {
  for (auto& group : adamw_->param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }
}

void Optimizer::ZeroGrad() {
  for (at::Tensor& p : params_) {
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  }
}

std::map<std::string, at::Tensor> Optimizer::StateDict() const {
  std::map<std::string, at::Tensor> out;
  auto& state = adamw_->state();
  for (size_t i = 0; i < params_.size(); ++i) {
    auto it = state.find(params_[i].unsafeGetTensorImpl());
    if (it == state.end()) continue;
    auto& s = static_cast<torch::optim::AdamWParamState&>(*it->second);
    out[names_[i] + ".exp_avg"] = s.exp_avg();
    out[names_[i] + ".exp_avg_sq"] = s.exp_avg_sq();
    out[names_[i] + ".step"] = at::scalar_tensor(s.step(), at::kLong);
  }
  return out;
}

absl::Status Optimizer::LoadStateDict(const std::map<std::string, at::Tensor>& in) {
  auto& state = adamw_->state();
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& n = names_[i];
    auto avg = in.find(n + ".exp_avg");
    auto sq = in.find(n + ".exp_avg_sq");
    auto step = in.find(n + ".step");
    if (avg == in.end() && sq == in.end() && step == in.end()) continue;  // never stepped
    if (avg == in.end() || sq == in.end() || step == in.end()) {
      return absl::InvalidArgumentError(absl::StrCat("optimizer state for ", n, " is incomplete"));
    }
    for (const auto* t : {&avg->second, &sq->second}) {
      if (!t->sizes().equals(params_[i].sizes())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "optimizer state for ", n, " has shape ", c10::str(t->sizes()), ", parameter has ",
            c10::str(params_[i].sizes())));
      }
    }
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->step(step->second.item<int64_t>());
    s->exp_avg(avg->second.to(params_[i].options()).clone());
    s->exp_avg_sq(sq->second.to(params_[i].options()).clone());
    state[params_[i].unsafeGetTensorImpl()] = std::move(s);
  }
  return absl::OkStatus();
}

}  // namespace kp::engine
