#include "runtime/engine/linear.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kp::engine {
namespace {

class DenseLinear final : public LinearLayer {
 public:
  DenseLinear(const LinearSpec& spec, LinearContext& context)
      : compute_dtype_(context.compute_dtype) {
    if (spec.shared_weight.defined()) {
      KP_CHECK(spec.shared_weight.size(0) == spec.out_features &&
               spec.shared_weight.size(1) == spec.in_features);
      weight_ = spec.shared_weight;  // not registered: its owner registers it
    } else {
      weight_ = register_parameter(
          "weight", InitNormal({spec.out_features, spec.in_features}, spec.init_std, context));
    }
    if (spec.bias) {
      bias_ = register_parameter(
          "bias", at::zeros({spec.out_features},
                            at::TensorOptions().dtype(context.param_dtype).device(context.device)));
    }
  }

  at::Tensor Forward(const at::Tensor& x) override {
    // The cast is part of the autograd graph: grads flow back into the fp32
    // master weight (a no-op when param and compute dtypes match).
    at::Tensor w = weight_.to(compute_dtype_);
    at::Tensor b = bias_.defined() ? bias_.to(compute_dtype_) : at::Tensor();
    return at::linear(x.to(compute_dtype_), w, b);
  }

  at::Tensor weight() const override { return weight_; }

 private:
  at::ScalarType compute_dtype_;
  at::Tensor weight_;
  at::Tensor bias_;
};

class DenseLinearFactory final : public LinearFactory {
 public:
  std::shared_ptr<LinearLayer> Create(const LinearSpec& spec, LinearContext& context) override {
    return std::make_shared<DenseLinear>(spec, context);
  }
  std::string name() const override { return "dense"; }
};

}  // namespace

void LinearRegistry::Register(const std::string& precision, Maker maker) {
  makers_[precision] = std::move(maker);
}

bool LinearRegistry::Has(const std::string& precision) const { return makers_.count(precision) > 0; }

absl::StatusOr<std::unique_ptr<LinearFactory>> LinearRegistry::Make(
    const std::string& precision) const {
  auto it = makers_.find(precision);
  if (it == makers_.end()) {
    return absl::NotFoundError(absl::StrCat("no Linear registered for precision '", precision,
                                            "' (have: ", absl::StrJoin(names(), ", "), ")"));
  }
  return it->second();
}

std::vector<std::string> LinearRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [name, maker] : makers_) out.push_back(name);
  return out;
}

std::unique_ptr<LinearFactory> MakeDenseLinearFactory() {
  return std::make_unique<DenseLinearFactory>();
}

LinearRegistry DefaultLinearRegistry() {
  LinearRegistry r;
  r.Register("fp32", MakeDenseLinearFactory);
  r.Register("bf16", MakeDenseLinearFactory);
  return r;
}

at::Tensor InitNormal(at::IntArrayRef shape, double std, LinearContext& context) {
  at::Tensor t = at::normal(0.0, std, shape, context.generator, at::TensorOptions().dtype(at::kFloat));
  return t.to(at::TensorOptions().dtype(context.param_dtype).device(context.device));
}

}  // namespace kp::engine
