// Per-layer BF16-or-FP8 decision. FP8 pays two casts (x and W) forward and
// one (dY) backward around its three GEMMs; on small GEMMs that costs more
// than the faster tensor cores save. At start-up each distinct projection
// shape is timed both ways (a few fwd+bwd iterations) and FP8 is kept only
// where it wins; the choice and both times are logged.
#ifndef KP_RUNTIME_FP8_LAYER_CHOICE_H_
#define KP_RUNTIME_FP8_LAYER_CHOICE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "runtime/common/status.h"
#include "runtime/fp8/options.h"

namespace kp::fp8 {

struct LinearShape {
  int64_t tokens = 0;  // M
  int64_t in = 0;      // K
  int64_t out = 0;     // N
  bool operator<(const LinearShape& o) const {
    return std::tie(tokens, in, out) < std::tie(o.tokens, o.in, o.out);
  }
};

// at::_scaled_mm on sm90 needs every GEMM dimension (M, K, N: the backward's
// dW = dY^T X has M as its reduction) to be a multiple of 16.
bool ShapeSupportsFp8(const LinearShape& s);

struct LayerTiming {
  double bf16_us = 0;  // one forward + backward, microseconds
  double fp8_us = 0;
};

// The seam over the GPU: times one fwd+bwd of a layer of `shape` in both
// precisions. Tests use a fake.
class LayerTimer {
 public:
  virtual ~LayerTimer() = default;
  virtual absl::StatusOr<LayerTiming> Time(const LinearShape& shape, int64_t iters) = 0;
};

// Several ranks: each times a shape itself, then every rank takes the max of
// each side over all ranks, so all of them make the same choice. A layer in
// FP8 on one rank and BF16 on another would put tensors of different sizes
// into the amax all-reduce and let the replicas' numerics drift apart. A rank
// whose timing fails contributes an infinite FP8 time: every rank keeps BF16.
// Collective: every rank must time the same shapes in the same order (the
// model is built alike everywhere).
class AgreedLayerTimer final : public LayerTimer {
 public:
  // Replaces each value with its max over the ranks (an all-reduce).
  using MaxAcrossRanks = std::function<absl::Status(std::vector<double>& values)>;
  AgreedLayerTimer(std::unique_ptr<LayerTimer> inner, MaxAcrossRanks max_across_ranks)
      : inner_(std::move(inner)), max_(std::move(max_across_ranks)) {}
  absl::StatusOr<LayerTiming> Time(const LinearShape& shape, int64_t iters) override;

 private:
  std::unique_ptr<LayerTimer> inner_;
  MaxAcrossRanks max_;
};

struct LayerChoice {
  bool fp8 = false;
  bool measured = false;
  LayerTiming timing;
  std::string reason;  // for the log line
};

// Shapes FP8 cannot run stay BF16; with no timer (options.tokens == 0) an
// eligible shape uses FP8 unmeasured; otherwise FP8 only where
// bf16_us / fp8_us >= options.min_speedup. A timing error keeps BF16.
LayerChoice ChooseLayerPrecision(const LinearShape& shape, const Fp8Options& options,
                                 LayerTimer* timer);

// Measures each distinct shape once (16 layers share a handful of shapes).
class LayerChooser {
 public:
  LayerChooser(const Fp8Options& options, LayerTimer* timer) : options_(options), timer_(timer) {}
  // Logs "fp8 layer <name> [M x K -> N]: FP8|BF16 (reason)" once per layer.
  LayerChoice Choose(const std::string& layer_name, const LinearShape& shape);
  int64_t measurements() const { return measurements_; }

 private:
  Fp8Options options_;
  LayerTimer* timer_;
  std::map<LinearShape, LayerChoice> cache_;
  int64_t measurements_ = 0;
};

}  // namespace kp::fp8

#endif  // KP_RUNTIME_FP8_LAYER_CHOICE_H_
