// FP8 projections behind the engine's Linear seam (runtime/engine/linear.h).
//
//   forward   y  = x W^T     x, W cast to E4M3          at::_scaled_mm -> x's dtype
//   backward  dX = dY W      dY cast to E5M2 (x E4M3 W)  at::_scaled_mm -> x's dtype
//             dW = dY^T X    (E5M2 x E4M3)               at::_scaled_mm -> fp32
// W is the fp32 master weight (cast straight from fp32); each cast also writes
// the transposed copy the backward GEMM needs (_scaled_mm on sm90 takes `a`
// row-major and `b` column-major), so no tensor is read twice for it.
//
// Use: create an Fp8Session for the job (it checks the device and fails, or
// falls back to BF16 loudly when the job allows it), register it under "fp8"
// in the engine's LinearRegistry, build the model. The session then holds the
// per-layer choices, the metrics and the FP8 state for checkpoints.
#ifndef KP_RUNTIME_FP8_FP8_LINEAR_H_
#define KP_RUNTIME_FP8_FP8_LINEAR_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/common/status.h"
#include "runtime/engine/linear.h"
#include "runtime/fp8/device_check.h"
#include "runtime/fp8/layer_choice.h"
#include "runtime/fp8/layer_state.h"
#include "runtime/fp8/options.h"

namespace kp::fp8 {

// One layer's FP8 figures, for the metrics log. Reading them syncs the device.
struct Fp8LayerMetrics {
  std::string name;
  bool fp8 = false;            // false: the layer runs BF16 (its choice is in the log)
  float amax[kNumRoles] = {};  // this step's amax so far: x, w, grad
  float scale[kNumRoles] = {};
  int64_t underflow[kNumRoles] = {};  // nonzero elements cast to 0 since the last reset
};

class Fp8Linear final : public engine::LinearLayer {
 public:
  Fp8Linear(const engine::LinearSpec& spec, engine::LinearContext& context, const Fp8Options& options);

  // x: [..., in] -> [..., out] in the compute dtype. A token count that is not
  // a multiple of 16 runs this call in BF16 (warned once).
  at::Tensor Forward(const at::Tensor& x) override;
  at::Tensor weight() const override { return weight_; }

  const std::string& layer_name() const { return name_; }
  Fp8LayerState& state() { return state_; }
  // Ends the step now. Normally automatic: a backward pass marks the step
  // done and the next Forward updates scales and rolls the histories before
  // casting, so activation recomputation (which runs between the forward and
  // the backward) reuses the forward's scales exactly.
  void EndStep();

 private:
  std::string name_;
  int64_t in_, out_;
  at::ScalarType compute_dtype_;
  Fp8Options options_;
  at::Tensor weight_;
  Fp8LayerState state_;
  bool warned_shape_ = false;
};

class Fp8Session {
 public:
  // Checks `device` (ResolveFp8): an error when FP8 is unsupported and
  // options.allow_fallback is false; a fallback session (every layer BF16,
  // logged) when it is true. options.allow_cpu_emulation skips the check.
  static absl::StatusOr<std::shared_ptr<Fp8Session>> Create(const Fp8Options& options,
                                                             const Fp8DeviceInfo& device);

  const Fp8Options& options() const { return options_; }
  bool fp8_enabled() const { return fp8_enabled_; }

  // Builds the layer for `spec` (called by the factory). The LM head, tied
  // weights, biased layers, shapes FP8 cannot run and layers where FP8 timed
  // slower get the engine's dense Linear.
  std::shared_ptr<engine::LinearLayer> Create(const engine::LinearSpec& spec,
                                              engine::LinearContext& context);

  // The layer timer for start-up choices; by default a CUDA timer when the
  // model is on a GPU and options.tokens > 0. Tests inject a fake.
  void SetTimer(std::unique_ptr<LayerTimer> timer) { timer_ = std::move(timer); }

  // Several ranks: every start-up timing is reduced to its max over the
  // ranks before the choice (AgreedLayerTimer), so all ranks choose alike.
  // Set before the first Create; every rank then times collectively.
  void SetTimingAgreement(AgreedLayerTimer::MaxAcrossRanks max_across_ranks) {
    agree_ = std::move(max_across_ranks);
  }

  // Per-layer decisions in creation order: (layer name, choice).
  std::vector<std::pair<std::string, LayerChoice>> choices() const;

  // The decisions as text for a checkpoint ("name=fp8;name=bf16;..."), and
  // back into Fp8Options::forced_choices for the resumed run.
  std::string EncodeChoices() const;
  static absl::StatusOr<std::map<std::string, bool>> DecodeChoices(const std::string& text);

  std::vector<Fp8LayerMetrics> Metrics(bool reset_underflow);

  // Every FP8 layer's state (names "<layer>.fp8.x_amax_history", ...; see
  // layer_state.h), for a checkpoint part; and its restore. A layer with no
  // state at all in `tensors` (it ran BF16 when that checkpoint was written)
  // starts fresh, with a warning; a partial state is an error.
  std::map<std::string, at::Tensor> StateDict() const;
  absl::Status LoadStateDict(const std::map<std::string, at::Tensor>& tensors);

  std::vector<std::shared_ptr<Fp8Linear>> fp8_layers() const;

 private:
  Fp8Session(const Fp8Options& options, bool fp8_enabled)
      : options_(options), fp8_enabled_(fp8_enabled) {}

  Fp8Options options_;
  bool fp8_enabled_;
  std::unique_ptr<LayerTimer> timer_;
  AgreedLayerTimer::MaxAcrossRanks agree_;
  std::unique_ptr<LayerChooser> chooser_;
  std::unique_ptr<engine::LinearFactory> dense_;
  mutable std::mutex mu_;
  std::vector<std::weak_ptr<Fp8Linear>> layers_;
  std::vector<std::pair<std::string, LayerChoice>> choices_;
};

// The LinearFactory the engine calls; shares `session`.
std::unique_ptr<engine::LinearFactory> MakeFp8LinearFactory(std::shared_ptr<Fp8Session> session);

// registry.Register("fp8", ...) with this session.
void RegisterFp8Linear(engine::LinearRegistry& registry, std::shared_ptr<Fp8Session> session);

// Times one fwd+bwd of a dense BF16 layer and of an Fp8Linear of a shape on
// `device` with CUDA events (after one warm-up iteration each). Draws its
// weights from a private generator, never the model's.
std::unique_ptr<LayerTimer> MakeCudaLayerTimer(at::Device device, const Fp8Options& options);

}  // namespace kp::fp8

#endif  // KP_RUNTIME_FP8_FP8_LINEAR_H_
