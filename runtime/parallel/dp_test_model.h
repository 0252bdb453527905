// Test model and training loop shared by the data-parallel tests.
#ifndef KP_RUNTIME_PARALLEL_DP_TEST_MODEL_H_
#define KP_RUNTIME_PARALLEL_DP_TEST_MODEL_H_

#include "runtime/parallel/data_parallel.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/utils.h>

#include <memory>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kp::parallel::dptest {

// Two Linear layers with a tanh between them.
struct Net {
  torch::nn::Linear l1{nullptr}, l2{nullptr};
  explicit Net(uint64_t seed, c10::Device device = c10::Device(c10::kCPU)) {
    // The global generator: ranks as threads must not interleave here.
    static std::mutex mu;
    std::lock_guard<std::mutex> lock(mu);
    torch::manual_seed(seed);
    l1 = torch::nn::Linear(12, 32);
    l2 = torch::nn::Linear(32, 5);
    l1->to(device);
    l2->to(device);
  }
  std::vector<at::Tensor> params() {
    auto p = l1->parameters();
    for (auto& q : l2->parameters()) p.push_back(q);
    return p;
  }
  at::Tensor forward(const at::Tensor& x) { return l2->forward(at::tanh(l1->forward(x))); }
};

inline constexpr int kGlobalBatch = 16;
inline constexpr int kSteps = 3;
inline constexpr double kLr = 0.1;
// Sums over ranks happen in another order than over one batch; float32.
inline constexpr double kRelTol = 1e-5;

inline at::Tensor Data(int step, bool target) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 + step * 2 + target);
  return at::randn({kGlobalBatch, target ? 5 : 12}, gen);
}

// One replica's training: rows [begin, end) of each global batch, split into
// `micro` micro-steps; every rank's loss is the mean over its rows, so the dp
// average of gradients is the gradient of the global mean.
// Returns the final parameters on the CPU.
inline std::vector<at::Tensor> Train(comm::Communicator* comm, uint64_t init_seed, int micro,
                                     size_t bucket_bytes,
                                     c10::Device device = c10::Device(c10::kCPU)) {
  Net net(init_seed, device);
  auto params = net.params();
  const int world = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  std::unique_ptr<GradientReducer> reducer;
  if (comm) {
    reducer = std::make_unique<GradientReducer>(comm, params, bucket_bytes);
    KP_CHECK(reducer->BroadcastParameters(0).ok());
  }
  const int rows = kGlobalBatch / world, mrows = rows / micro;
  for (int step = 0; step < kSteps; ++step) {
    for (auto& p : params) p.mutable_grad() = at::Tensor();
    const at::Tensor x = Data(step, false).to(device), y = Data(step, true).to(device);
    for (int m = 0; m < micro; ++m) {
      if (reducer) reducer->PrepareForBackward(m == micro - 1);
      const int64_t b = rank * rows + m * mrows;
      at::Tensor out = net.forward(x.narrow(0, b, mrows));
      at::Tensor loss = torch::nn::functional::mse_loss(out, y.narrow(0, b, mrows)) / micro;
      loss.backward();
    }
    if (reducer) {
      auto s = reducer->Finish();
      KP_CHECK(s.ok());
    }
    at::NoGradGuard ng;
    for (auto& p : params) p.sub_(p.grad() * kLr);
  }
  std::vector<at::Tensor> out;
  for (auto& p : params) out.push_back(p.detach().cpu().clone());
  return out;
}

inline absl::Status CompareToSingleProcess(const std::vector<at::Tensor>& got, int micro) {
  auto want = Train(nullptr, /*init_seed=*/0, micro, 0);
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = (got[i].to(at::kDouble) - want[i].to(at::kDouble)).abs().max().item<double>();
    const double scale = want[i].abs().max().item<double>();
    if (err > kRelTol * scale) {
      return absl::InternalError(absl::StrCat("param ", i, ": max error ", err, " vs scale ", scale));
    }
  }
  // A check that can fail: training moved the parameters.
  Net init(0);
  if (at::allclose(init.params()[0], want[0])) return absl::InternalError("training did nothing");
  return absl::OkStatus();
}

}  // namespace kp::parallel::dptest

#endif  // KP_RUNTIME_PARALLEL_DP_TEST_MODEL_H_
