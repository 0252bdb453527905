// Writes a checkpoint whose values follow closed formulas, so that
// check_checkpoint.py can recompute them independently (with numpy) and
// compare: the Python half of the checkpoint round trip.
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

#include "runtime/engine/checkpoint/checkpoint_manager.h"

namespace {

at::Tensor Make(std::vector<int64_t> shape, at::ScalarType type, const std::function<double(int64_t)>& f) {
  at::Tensor t = at::empty(shape, at::kDouble);
  double* p = t.data_ptr<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = f(i);
  return t.to(type);
}

at::Tensor MakeInt(std::vector<int64_t> shape, at::ScalarType type, const std::function<int64_t(int64_t)>& f) {
  at::Tensor t = at::empty(shape, at::kLong);
  int64_t* p = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = f(i);
  return t.to(type);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s RUN_DIR\n", argv[0]);
    return 2;
  }
  using kp::ckpt::TensorMap;
  TensorMap model = {
      {"f64", Make({3, 5, 7}, at::kDouble, [](int64_t i) { return std::sin(0.37 * i + 0.5) * 3; })},
      {"f32", Make({4, 6}, at::kFloat, [](int64_t i) { return std::cos(0.11 * i) * 7.5; })},
      {"f16", Make({5, 3}, at::kHalf, [](int64_t i) { return ((i * 37) % 201 - 100) / 8.0; })},
      {"i64", MakeInt({9}, at::kLong, [](int64_t i) { return i * i * 1000003 - 5000000000000; })},
      {"i32", MakeInt({2, 3, 4}, at::kInt, [](int64_t i) { return (i * 7919) % 100003 - 50000; })},
      {"u8", MakeInt({33}, at::kByte, [](int64_t i) { return (i * 31 + 7) % 256; })},
  };
  TensorMap optimizer = {
      {"bf16", Make({6, 4}, at::kBFloat16, [](int64_t i) { return ((i * 53) % 255 - 127) / 4.0; })},
      {"f8_e4m3", Make({16}, at::kFloat8_e4m3fn, [](int64_t i) { return ((i % 16) - 8) * 0.25; })},
      {"f8_e5m2", Make({16}, at::kFloat8_e5m2, [](int64_t i) { return ((i % 16) - 8) * 0.25; })},
  };
  kp::ckpt::CheckpointState state;
  state.step = 123;
  state.data_position = 123 * 64;
  state.config_hash = "py-test";
  std::string rng(256, '\0');
  for (int i = 0; i < 256; ++i) rng[i] = static_cast<char>(i);
  state.rng["cpu"] = rng;
  kp::ckpt::CheckpointManager manager({.run_dir = argv[1]});
  absl::Status s = manager.SaveAsync(state, {{"model", model}, {"optimizer", optimizer}});
  if (s.ok()) s = manager.Wait();
  if (!s.ok()) {
    std::fprintf(stderr, "save failed: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("wrote %s\n", kp::ckpt::CheckpointManager::LatestComplete(argv[1])->c_str());
  return 0;
}
