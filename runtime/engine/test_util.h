// Numerical helpers for the engine's gradient tests.
#ifndef KP_RUNTIME_ENGINE_TEST_UTIL_H_
#define KP_RUNTIME_ENGINE_TEST_UTIL_H_

#include <functional>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "runtime/engine/config.h"

namespace kp::engine::testing {

// max |a - b| / max |b|: one relative error for a whole tensor.
// The small model the engine's CPU tests build (GQA: 4 heads over 2 kv heads).
inline ModelConfig TinyConfig() {
  ModelConfig c;
  c.vocab_size = 37;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_hidden = 48;
  c.max_seq_len = 16;
  return c;
}

inline double RelErr(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor bd = b.detach().to(at::kDouble);
  double num = (a.detach().to(at::kDouble) - bd).abs().max().item<double>();
  double den = bd.abs().max().item<double>() + 1e-30;
  return num / den;
}

using ScalarFn = std::function<at::Tensor(const std::vector<at::Tensor>&)>;

// Autograd gradients of the scalar f(inputs) wrt every input.
inline std::vector<at::Tensor> Grads(const ScalarFn& f, const std::vector<at::Tensor>& inputs) {
  std::vector<at::Tensor> xs;
  for (const auto& x : inputs) xs.push_back(x.detach().requires_grad_(true));
  at::Tensor y = f(xs);
  return torch::autograd::grad({y}, xs, {}, false, false, /*allow_unused=*/true);
}

// Checks autograd gradients against central finite differences in float64
// along random directions v: (f(x + e v) - f(x - e v)) / 2e == <grad f, v>.
inline void ExpectGradientMatchesFiniteDifferences(const ScalarFn& f,
                                                   std::vector<at::Tensor> inputs,
                                                   double tol = 1e-6, int directions = 3) {
  for (auto& x : inputs) x = x.detach().to(at::kDouble);
  std::vector<at::Tensor> grads = Grads(f, inputs);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(99);
  const double eps = 1e-6;
  for (int d = 0; d < directions; ++d) {
    std::vector<at::Tensor> plus, minus;
    double predicted = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      at::Tensor v = at::randn(inputs[i].sizes(), gen, inputs[i].options());
      plus.push_back(inputs[i] + eps * v);
      minus.push_back(inputs[i] - eps * v);
      if (grads[i].defined()) predicted += (grads[i] * v).sum().item<double>();
    }
    double measured;
    {
      at::NoGradGuard no_grad;
      measured = (f(plus) - f(minus)).item<double>() / (2 * eps);
    }
    EXPECT_NEAR(measured, predicted, tol * (1.0 + std::abs(predicted)))
        << "direction " << d;
  }
}

}  // namespace kp::engine::testing

#endif  // KP_RUNTIME_ENGINE_TEST_UTIL_H_
