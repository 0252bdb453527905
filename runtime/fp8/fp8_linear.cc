#include "runtime/fp8/fp8_linear.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <cuda_runtime_api.h>
#include <torch/csrc/autograd/custom_function.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/fp8/cast.h"
#include "runtime/fp8/log.h"

namespace kp::fp8 {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Fp8LayerState StateFrom(AutogradContext* ctx) {
  Fp8LayerState s;
  s.amax_history = ctx->saved_data["amax_history"].toTensor();
  s.scale = ctx->saved_data["scale"].toTensor();
  s.scale_inv = ctx->saved_data["scale_inv"].toTensor();
  s.underflow = ctx->saved_data["underflow"].toTensor();
  s.pending_update = ctx->saved_data["pending_update"].toTensor();
  return s;
}

// cuBLASLt rejects (CUBLAS_STATUS_NOT_SUPPORTED, seen on an H100) scale
// pointers that are not 16-byte aligned; an element view of the [3] scale
// tensor sits 4 or 8 bytes in. A fresh allocation is aligned.
at::Tensor Aligned(const at::Tensor& scalar) { return scalar.clone(); }

// The three GEMMs in FP8. The state tensors travel as arguments so the
// autograd graph holds them (not the layer), and the kernels update them in
// place.
struct Fp8MatmulFunction : public torch::autograd::Function<Fp8MatmulFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x2d, const at::Tensor& weight,
                            const at::Tensor& amax_history, const at::Tensor& scale,
                            const at::Tensor& scale_inv, const at::Tensor& underflow,
                            const at::Tensor& pending_update, int64_t recipe, int64_t margin,
                            bool fast_accum) {
    Fp8LayerState s;
    s.amax_history = amax_history;
    s.scale = scale;
    s.scale_inv = scale_inv;
    s.underflow = underflow;
    s.pending_update = pending_update;
    const auto r = static_cast<Fp8Recipe>(recipe);
    const Fp8Cast cx = CastToFp8(x2d, kRoleX, s, r, margin, {true, true});
    const Fp8Cast cw = CastToFp8(weight.detach(), kRoleW, s, r, margin, {true, true});
    // The scales of this forward, frozen: the current recipe rewrites
    // state.scale_inv at every cast, and the backward must dequantise the
    // saved copies with the scales they were made with.
    const at::Tensor inv = scale_inv.clone();
    at::Tensor y = at::_scaled_mm(cx.data, cw.data.t(), Aligned(inv[kRoleX]), Aligned(inv[kRoleW]),
                                  std::nullopt,
                                  std::nullopt, x2d.scalar_type(), fast_accum);
    ctx->save_for_backward({cx.data_t, cw.data_t, inv});
    ctx->saved_data["amax_history"] = amax_history;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["scale_inv"] = scale_inv;
    ctx->saved_data["underflow"] = underflow;
    ctx->saved_data["pending_update"] = pending_update;
    ctx->saved_data["recipe"] = recipe;
    ctx->saved_data["margin"] = margin;
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& x_t = saved[0];  // [K, M] E4M3
    const at::Tensor& w_t = saved[1];  // [K, N] E4M3
    const at::Tensor& inv = saved[2];
    Fp8LayerState s = StateFrom(ctx);
    const auto recipe = static_cast<Fp8Recipe>(ctx->saved_data["recipe"].toInt());
    const int64_t margin = ctx->saved_data["margin"].toInt();
    const auto weight_dtype = static_cast<at::ScalarType>(ctx->saved_data["weight_dtype"].toInt());
    const at::Tensor dy = grad_outputs[0].contiguous();
    const bool want_dx = ctx->needs_input_grad(0), want_dw = ctx->needs_input_grad(1);
    const Fp8Cast cg = CastToFp8(dy, kRoleGrad, s, recipe, margin, {want_dx, want_dw});
    const at::Tensor g_inv = s.scale_inv[kRoleGrad].clone();
    at::Tensor dx, dw;
    if (want_dx) {
      // [M, N] x [N, K]: b is W as column-major [N, K], i.e. W^T row-major.
      dx = at::_scaled_mm(cg.data, w_t.t(), g_inv, Aligned(inv[kRoleW]), std::nullopt, std::nullopt,
                          dy.scalar_type());
    }
    if (want_dw) {
      // [N, M] x [M, K]: a is dY^T row-major, b is X as column-major [M, K].
      dw = at::_scaled_mm(cg.data_t, x_t.t(), g_inv, Aligned(inv[kRoleX]), std::nullopt, std::nullopt,
                          at::kFloat);
      if (weight_dtype != at::kFloat) dw = dw.to(weight_dtype);
    }
    s.pending_update.fill_(1);
    return {dx, dw, {}, {}, {}, {}, {}, {}, {}, {}};
  }
};

bool IsLmHead(const std::string& name) { return name == "lm_head" || absl::EndsWith(name, ".lm_head"); }

class Fp8LinearFactory final : public engine::LinearFactory {
 public:
  explicit Fp8LinearFactory(std::shared_ptr<Fp8Session> session) : session_(std::move(session)) {}
  std::shared_ptr<engine::LinearLayer> Create(const engine::LinearSpec& spec,
                                              engine::LinearContext& context) override {
    return session_->Create(spec, context);
  }
  std::string name() const override { return "fp8"; }

 private:
  std::shared_ptr<Fp8Session> session_;
};

class CudaLayerTimer final : public LayerTimer {
 public:
  CudaLayerTimer(at::Device device, const Fp8Options& options) : device_(device), options_(options) {}

  absl::StatusOr<LayerTiming> Time(const LinearShape& shape, int64_t iters) override {
    if (!device_.is_cuda()) return absl::FailedPreconditionError("layer timing needs a CUDA device");
    engine::LinearContext ctx;
    ctx.device = device_;
    ctx.param_dtype = at::kFloat;
    ctx.compute_dtype = at::kBFloat16;
    ctx.generator = at::detail::createCPUGenerator(/*seed_in=*/12345);
    engine::LinearSpec spec;
    spec.name = "autotune";
    spec.in_features = shape.in;
    spec.out_features = shape.out;
    auto dense = engine::MakeDenseLinearFactory()->Create(spec, ctx);
    Fp8Options o = options_;
    o.tokens = 0;
    auto fp8 = std::make_shared<Fp8Linear>(spec, ctx, o);
    const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(device_);
    const at::Tensor x = at::randn({shape.tokens, shape.in}, bf16).requires_grad_(true);
    const at::Tensor gy = at::randn({shape.tokens, shape.out}, bf16);
    LayerTiming t;
    KP_ASSIGN_OR_RETURN(t.bf16_us, TimeOne(*dense, x, gy, iters));
    KP_ASSIGN_OR_RETURN(t.fp8_us, TimeOne(*fp8, x, gy, iters));
    return t;
  }

 private:
  absl::StatusOr<double> TimeOne(engine::LinearLayer& layer, const at::Tensor& x,
                                 const at::Tensor& gy, int64_t iters) {
    auto step = [&] { layer.Forward(x).backward(gy); };
    // Warm-up: lazily loaded kernels, cuBLASLt heuristics, the allocator and
    // the GPU's clocks. With one warm-up step the first shape timed at
    // start-up (the qkv projection) read 4-5x slower than it runs, in BF16
    // and FP8 alike, and was wrongly kept in BF16 (H100, 2026-11-25).
    for (int i = 0; i < 3; ++i) step();
    cudaStream_t stream = static_cast<cudaStream_t>(CurrentCudaStream(device_));
    cudaEvent_t start, stop;
    if (cudaEventCreate(&start) != cudaSuccess || cudaEventCreate(&stop) != cudaSuccess) {
      return absl::InternalError("cudaEventCreate failed");
    }
    // The best of three rounds: a round disturbed by anything else on the
    // device must not decide a layer's precision.
    double best_us = 0;
    cudaError_t err = cudaSuccess;
    for (int round = 0; round < 3 && err == cudaSuccess; ++round) {
      cudaEventRecord(start, stream);
      for (int64_t i = 0; i < iters; ++i) step();
      cudaEventRecord(stop, stream);
      err = cudaEventSynchronize(stop);
      float ms = 0;
      if (err == cudaSuccess) err = cudaEventElapsedTime(&ms, start, stop);
      const double us = 1000.0 * ms / static_cast<double>(iters);
      if (round == 0 || us < best_us) best_us = us;
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    if (err != cudaSuccess) return absl::InternalError(cudaGetErrorString(err));
    return best_us;
  }

  at::Device device_;
  Fp8Options options_;
};

}  // namespace

// ---- Fp8Linear ----

Fp8Linear::Fp8Linear(const engine::LinearSpec& spec, engine::LinearContext& context,
                     const Fp8Options& options)
    : name_(spec.name),
      in_(spec.in_features),
      out_(spec.out_features),
      compute_dtype_(context.compute_dtype),
      options_(options),
      state_(Fp8LayerState::Create(options.recipe == Fp8Recipe::kDelayed ? options.amax_history_len : 1,
                                   context.device)) {
  KP_CHECK(!spec.shared_weight.defined() && !spec.bias);
  weight_ = register_parameter("weight", engine::InitNormal({out_, in_}, spec.init_std, context));
}

void Fp8Linear::EndStep() {
  fp8::EndStep(state_, options_.recipe, options_.margin);
  state_.pending_update.zero_();
}

at::Tensor Fp8Linear::Forward(const at::Tensor& x) {
  KP_CHECK(x.size(-1) == in_);
  const at::Tensor x2d = x.to(compute_dtype_).reshape({-1, in_});
  if (x2d.size(0) % 16 != 0) {
    if (!warned_shape_) {
      LogWarn(absl::StrCat("fp8 layer ", name_, ": ", x2d.size(0),
                           " tokens is not a multiple of 16; this shape runs in ",
                           c10::toString(compute_dtype_)));
      warned_shape_ = true;
    }
    return at::linear(x.to(compute_dtype_), weight_.to(compute_dtype_));
  }
  // pending_update lives on the CPU: reading it never syncs the GPU.
  if (state_.pending_update.item<int64_t>() != 0) EndStep();
  // No history before the first completed step: scale from the tensors
  // themselves (see layer_state.h).
  const Fp8Recipe recipe = state_.steps.item<int64_t>() == 0 ? Fp8Recipe::kCurrent : options_.recipe;
  at::Tensor y = Fp8MatmulFunction::apply(
      x2d, weight_, state_.amax_history, state_.scale, state_.scale_inv, state_.underflow,
      state_.pending_update, static_cast<int64_t>(recipe), options_.margin,
      options_.fast_accum_forward);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out_;
  return y.view(shape);
}

// ---- Fp8Session ----

absl::StatusOr<std::shared_ptr<Fp8Session>> Fp8Session::Create(const Fp8Options& options,
                                                                const Fp8DeviceInfo& device) {
  KP_RETURN_IF_ERROR(ValidateOptions(options));
  bool enabled = true;
  if (!options.allow_cpu_emulation) {
    KP_ASSIGN_OR_RETURN(enabled, ResolveFp8(device, options.allow_fallback));
  }
  if (enabled) {
    LogInfo(absl::StrCat("fp8: ", RecipeName(options.recipe), " scaling (history ",
                         options.amax_history_len, ", margin ", options.margin, "), LM head ",
                         options.fp8_lm_head ? "FP8" : "BF16"));
  }
  std::shared_ptr<Fp8Session> s(new Fp8Session(options, enabled));
  s->dense_ = engine::MakeDenseLinearFactory();
  return s;
}

std::shared_ptr<engine::LinearLayer> Fp8Session::Create(const engine::LinearSpec& spec,
                                                         engine::LinearContext& context) {
  std::lock_guard<std::mutex> lock(mu_);
  auto dense = [&](std::string reason) {
    LayerChoice c;
    c.reason = std::move(reason);
    LogInfo(absl::StrCat("fp8 layer ", spec.name, " [", spec.in_features, " -> ", spec.out_features,
                         "]: BF16 (", c.reason, ")"));
    choices_.emplace_back(spec.name, c);
    return dense_->Create(spec, context);
  };
  if (!fp8_enabled_) return dense("FP8 unsupported here; fallback allowed");
  if (IsLmHead(spec.name) && !options_.fp8_lm_head) return dense("LM head stays BF16 (fp8.fp8_lm_head)");
  if (spec.shared_weight.defined()) return dense("tied weight");
  if (spec.bias) return dense("bias is not supported by the FP8 path");
  if (!chooser_) {
    if (!timer_ && options_.tokens > 0 && context.device.is_cuda()) {
      timer_ = MakeCudaLayerTimer(context.device, options_);
    }
    if (timer_ && agree_) timer_ = std::make_unique<AgreedLayerTimer>(std::move(timer_), agree_);
    chooser_ = std::make_unique<LayerChooser>(options_, timer_.get());
  }
  LayerChoice c;
  auto forced = options_.forced_choices.find(spec.name);
  if (forced != options_.forced_choices.end()) {
    c.fp8 = forced->second;
    c.reason = "restored from the checkpoint";
    if (c.fp8 && !ShapeSupportsFp8({options_.tokens > 0 ? options_.tokens : 16, spec.in_features,
                                    spec.out_features})) {
      c.fp8 = false;
      c.reason = "restored as FP8 but the shape does not allow it";
    }
    LogInfo(absl::StrCat("fp8 layer ", spec.name, ": ", c.fp8 ? "FP8" : "BF16", " (", c.reason, ")"));
  } else {
    c = chooser_->Choose(spec.name, {options_.tokens, spec.in_features, spec.out_features});
  }
  choices_.emplace_back(spec.name, c);
  if (!c.fp8) return dense_->Create(spec, context);
  auto layer = std::make_shared<Fp8Linear>(spec, context, options_);
  layers_.push_back(layer);
  return layer;
}

std::vector<std::pair<std::string, LayerChoice>> Fp8Session::choices() const {
  std::lock_guard<std::mutex> lock(mu_);
  return choices_;
}

std::vector<std::shared_ptr<Fp8Linear>> Fp8Session::fp8_layers() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<Fp8Linear>> out;
  for (const auto& w : layers_) {
    if (auto l = w.lock()) out.push_back(std::move(l));
  }
  return out;
}

std::vector<Fp8LayerMetrics> Fp8Session::Metrics(bool reset_underflow) {
  std::vector<Fp8LayerMetrics> out;
  std::map<std::string, bool> is_fp8;
  for (const auto& layer : fp8_layers()) {
    Fp8LayerState& s = layer->state();
    Fp8LayerMetrics m;
    m.name = layer->layer_name();
    m.fp8 = true;
    const at::Tensor amax = s.amax_history.select(1, 0).to(at::kCPU);
    const at::Tensor scale = s.scale.to(at::kCPU);
    const at::Tensor under = s.underflow.to(at::kCPU);
    for (int r = 0; r < kNumRoles; ++r) {
      m.amax[r] = amax[r].item<float>();
      m.scale[r] = scale[r].item<float>();
      m.underflow[r] = under[r].item<int64_t>();
    }
    if (reset_underflow) s.underflow.zero_();
    is_fp8[m.name] = true;
    out.push_back(std::move(m));
  }
  for (const auto& [name, choice] : choices()) {
    if (is_fp8.count(name) == 0) {
      Fp8LayerMetrics m;
      m.name = name;
      out.push_back(std::move(m));
    }
  }
  return out;
}

std::map<std::string, at::Tensor> Fp8Session::StateDict() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& layer : fp8_layers()) AppendStateDict(layer->layer_name(), layer->state(), &out);
  return out;
}

absl::Status Fp8Session::LoadStateDict(const std::map<std::string, at::Tensor>& tensors) {
  for (const auto& layer : fp8_layers()) {
    const std::string prefix = layer->layer_name() + ".fp8.";
    auto it = tensors.lower_bound(prefix);
    if (it == tensors.end() || it->first.compare(0, prefix.size(), prefix) != 0) {
      LogWarn(absl::StrCat("fp8 layer ", layer->layer_name(),
                           ": the checkpoint has no FP8 state for it (it ran BF16 then); "
                           "starting with fresh scales"));
      continue;
    }
    KP_RETURN_IF_ERROR(fp8::LoadStateDict(layer->layer_name(), tensors, &layer->state()));
  }
  return absl::OkStatus();
}

std::string Fp8Session::EncodeChoices() const {
  std::string out;
  for (const auto& [name, choice] : choices()) {
    absl::StrAppend(&out, out.empty() ? "" : ";", name, "=", choice.fp8 ? "fp8" : "bf16");
  }
  return out;
}

absl::StatusOr<std::map<std::string, bool>> Fp8Session::DecodeChoices(const std::string& text) {
  std::map<std::string, bool> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(';', start);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(start, end - start);
    start = end + 1;
    if (item.empty()) continue;
    const size_t eq = item.rfind('=');
    const std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (eq == 0 || (value != "fp8" && value != "bf16")) {
      return absl::InvalidArgumentError(
          absl::StrCat("fp8 layer choices: bad entry '", item, "' (expected <layer>=fp8|bf16)"));
    }
    out[item.substr(0, eq)] = value == "fp8";
  }
  return out;
}

std::unique_ptr<engine::LinearFactory> MakeFp8LinearFactory(std::shared_ptr<Fp8Session> session) {
  return std::make_unique<Fp8LinearFactory>(std::move(session));
}

void RegisterFp8Linear(engine::LinearRegistry& registry, std::shared_ptr<Fp8Session> session) {
  registry.Register("fp8", [session] { return MakeFp8LinearFactory(session); });
}

std::unique_ptr<LayerTimer> MakeCudaLayerTimer(at::Device device, const Fp8Options& options) {
  return std::make_unique<CudaLayerTimer>(device, options);
}

}  // namespace kp::fp8
