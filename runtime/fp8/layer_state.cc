#include "runtime/fp8/layer_state.h"

#include <cfloat>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace kp::fp8 {

const char* RoleName(int role) {
  switch (role) {
    case kRoleX:
      return "x";
    case kRoleW:
      return "w";
    default:
      return "grad";
  }
}

kernels::Fp8Format RoleFormat(int role) {
  return role == kRoleGrad ? kernels::Fp8Format::kE5M2 : kernels::Fp8Format::kE4M3;
}

Fp8LayerState Fp8LayerState::Create(int64_t history_len, at::Device device) {
  KP_CHECK(history_len >= 1);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  Fp8LayerState s;
  s.amax_history = at::zeros({kNumRoles, history_len}, f32);
  s.scale = at::ones({kNumRoles}, f32);
  s.scale_inv = at::ones({kNumRoles}, f32);
  s.underflow = at::zeros({kNumRoles}, f32.dtype(at::kLong));
  s.pending_update = at::zeros({1}, at::TensorOptions().dtype(at::kLong));
  s.steps = at::zeros({1}, at::TensorOptions().dtype(at::kLong));
  s.fp8_max = at::tensor({kernels::Fp8MaxFinite(RoleFormat(kRoleX)), kernels::Fp8MaxFinite(RoleFormat(kRoleW)),
                          kernels::Fp8MaxFinite(RoleFormat(kRoleGrad))},
                         at::TensorOptions().dtype(at::kFloat))
                  .to(device);
  return s;
}

void EndStep(Fp8LayerState& s, Fp8Recipe recipe, int64_t margin) {
  if (recipe == Fp8Recipe::kDelayed) {
    const at::Tensor amax = std::get<0>(s.amax_history.max(1));
    const at::Tensor& fp8_max = s.fp8_max;
    // (fp8_max / amax) * 2^-margin: the power of two is exact, as ldexpf in
    // kernels::Fp8ScaleFromAmax, so both give the same bits.
    at::Tensor fresh = (fp8_max / amax) * static_cast<float>(std::ldexp(1.0, -static_cast<int>(margin)));
    fresh = at::clamp_max(fresh, FLT_MAX);
    const at::Tensor usable = (amax > 0) & at::isfinite(amax) & (fresh > 0);
    s.scale.copy_(at::where(usable, fresh, s.scale));
    s.scale_inv.copy_(at::reciprocal(s.scale));
  }
  if (s.amax_history.size(1) > 1) s.amax_history.copy_(at::roll(s.amax_history, 1, 1));
  s.amax_history.select(1, 0).zero_();
  s.steps.add_(1);
}

void AppendStateDict(const std::string& prefix, const Fp8LayerState& s,
                     std::map<std::string, at::Tensor>* out) {
  const std::string p = prefix + ".fp8.";
  const at::Tensor hist = s.amax_history.to(at::kCPU);
  const at::Tensor scale = s.scale.to(at::kCPU);
  for (int r = 0; r < kNumRoles; ++r) {
    (*out)[p + RoleName(r) + "_amax_history"] = hist[r].clone();
    // [1] rather than a 0-dim scalar: every tensor file format takes it.
    (*out)[p + RoleName(r) + "_scale"] = scale[r].reshape({1}).clone();
  }
  (*out)[p + "pending_update"] = s.pending_update.to(at::kCPU).clone();
  (*out)[p + "steps"] = s.steps.to(at::kCPU).clone();
}

absl::Status LoadStateDict(const std::string& prefix, const std::map<std::string, at::Tensor>& in,
                           Fp8LayerState* s) {
  const std::string p = prefix + ".fp8.";
  auto find = [&](const std::string& name) -> absl::StatusOr<at::Tensor> {
    auto it = in.find(p + name);
    if (it == in.end()) {
      return absl::NotFoundError(absl::StrCat("FP8 state: checkpoint lacks tensor '", p, name, "'"));
    }
    return it->second;
  };
  const int64_t len = s->amax_history.size(1);
  for (int r = 0; r < kNumRoles; ++r) {
    KP_ASSIGN_OR_RETURN(at::Tensor h, find(absl::StrCat(RoleName(r), "_amax_history")));
    if (h.dim() != 1 || h.size(0) != len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "FP8 state: '", p, RoleName(r), "_amax_history' has ", h.numel(),
          " entries but this run's fp8.amax_history_len is ", len));
    }
    KP_ASSIGN_OR_RETURN(at::Tensor sc, find(absl::StrCat(RoleName(r), "_scale")));
    if (sc.numel() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("FP8 state: '", p, RoleName(r), "_scale' must hold one value, has ", sc.numel()));
    }
    s->amax_history[r].copy_(h.to(at::kFloat));
    s->scale[r].copy_(sc.reshape({}).to(at::kFloat));
  }
  KP_ASSIGN_OR_RETURN(at::Tensor pending, find("pending_update"));
  if (pending.numel() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("FP8 state: '", p, "pending_update' must hold one value"));
  }
  s->pending_update.copy_(pending.reshape({1}).to(at::kLong));
  KP_ASSIGN_OR_RETURN(at::Tensor steps, find("steps"));
  if (steps.numel() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("FP8 state: '", p, "steps' must hold one value"));
  }
  s->steps.copy_(steps.reshape({1}).to(at::kLong));
  s->scale_inv.copy_(at::reciprocal(s->scale));
  s->underflow.zero_();
  return absl::OkStatus();
}

}  // namespace kp::fp8
