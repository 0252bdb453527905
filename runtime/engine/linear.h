// The Linear seam: every projection of the model (qkv, attention output,
// gate/up, down, LM head) is created through a LinearFactory, so another
// precision (FP8, runtime/fp8/) plugs in by name without touching the model.
// Factories are looked up in a LinearRegistry that the caller owns and passes
// in; there is no global registry.
#ifndef KP_RUNTIME_ENGINE_LINEAR_H_
#define KP_RUNTIME_ENGINE_LINEAR_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "runtime/common/status.h"

namespace kp::engine {

// y = x W^T (+ b). Weights live in the module as parameters (the fp32 master
// copy on GPU); Forward computes in the factory's compute dtype.
class LinearLayer : public torch::nn::Module {
 public:
  // x: [..., in_features] in the compute dtype; returns [..., out_features].
  virtual at::Tensor Forward(const at::Tensor& x) = 0;
  // The [out, in] weight as stored (for tying, FLOP counts, checkpoints).
  virtual at::Tensor weight() const = 0;
};

struct LinearSpec {
  std::string name;  // "blocks.3.attn.qkv": lets a factory choose per layer
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool bias = false;
  double init_std = 0.02;
  // When defined, the layer uses this [out, in] weight (owned and registered
  // elsewhere, e.g. the tied embedding) instead of creating its own.
  at::Tensor shared_weight;
};

// Where and how layers are built: parameters in param_dtype on device,
// initialised from `generator` (a CPU generator, so every device draws the
// same initial weights), math in compute_dtype.
struct LinearContext {
  at::Device device = at::kCPU;
  at::ScalarType param_dtype = at::kFloat;
  at::ScalarType compute_dtype = at::kFloat;
  at::Generator generator;
};

class LinearFactory {
 public:
  virtual ~LinearFactory() = default;
  virtual std::shared_ptr<LinearLayer> Create(const LinearSpec& spec, LinearContext& context) = 0;
  virtual std::string name() const = 0;
};

// Precision name ("fp32", "bf16", "fp8") -> factory. Built by the caller
// (RunTraining, tests) and passed down.
class LinearRegistry {
 public:
  using Maker = std::function<std::unique_ptr<LinearFactory>()>;
  void Register(const std::string& precision, Maker maker);
  bool Has(const std::string& precision) const;
  absl::StatusOr<std::unique_ptr<LinearFactory>> Make(const std::string& precision) const;
  std::vector<std::string> names() const;

 private:
  std::map<std::string, Maker> makers_;
};

// The plain dense Linear (at::linear in the compute dtype, autograd casts
// the fp32 master weight to bf16 per use, so gradients land in fp32).
std::unique_ptr<LinearFactory> MakeDenseLinearFactory();

// A registry with "fp32" and "bf16", both the dense Linear.
LinearRegistry DefaultLinearRegistry();

// Normal(0, std) of `shape` drawn on the CPU generator, then moved: the same
// seed gives the same weights on every device and dtype.
at::Tensor InitNormal(at::IntArrayRef shape, double std, LinearContext& context);

}  // namespace kp::engine

#endif  // KP_RUNTIME_ENGINE_LINEAR_H_
