#include "runtime/engine/recompute.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/variable.h>

#include "runtime/common/status.h"
#include "runtime/engine/fused_ops.h"

namespace kp::engine {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Keeps the callable alive in the autograd graph until backward has run.
struct FnHolder : torch::CustomClassHolder {
  explicit FnHolder(TensorFn f) : fn(std::move(f)) {}
  TensorFn fn;
};

c10::IValue Hold(const TensorFn& fn) {
  return c10::IValue::make_capsule(c10::make_intrusive<FnHolder>(fn));
}

const TensorFn& Held(AutogradContext* ctx) {
  return static_cast<FnHolder*>(ctx->saved_data["fn"].toCapsule().get())->fn;
}

at::ScalarType LossDtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Gradients of `out` (with upstream `grad_out`) wrt inputs; a missing one
// (an input fn did not use) becomes zeros so callers can add it. `out` is
// taken by value and dropped before the backward runs: only its graph is
// needed, and for a whole block its storage is a full [B, T, d] activation.
variable_list GradsOf(at::Tensor out, const at::Tensor& grad_out, const variable_list& inputs) {
  using torch::autograd::Edge;
  torch::autograd::edge_list roots{torch::autograd::impl::gradient_edge(out)};
  KP_CHECK(roots[0].function != nullptr);
  torch::autograd::edge_list wanted;
  for (const at::Tensor& in : inputs) {
    std::shared_ptr<torch::autograd::Node> fn = in.grad_fn();
    if (!fn) fn = torch::autograd::impl::try_get_grad_accumulator(in);
    if (fn) {
      wanted.emplace_back(std::move(fn), in.output_nr());
    } else {  // not part of the graph: its gradient is zero
      wanted.emplace_back(std::make_shared<torch::autograd::Identity>(), 0);
    }
  }
  out.reset();
  variable_list grads = torch::autograd::Engine::get_default_engine().execute(
      roots, {grad_out}, /*keep_graph=*/false, /*create_graph=*/false,
      /*accumulate_grad=*/false, wanted);
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].defined()) grads[i] = at::zeros_like(inputs[i]);
  }
  return grads;
}

// Keeps a CheckpointOffload (and its offloader) alive in the graph.
struct OffloadHolder : torch::CustomClassHolder {
  explicit OffloadHolder(CheckpointOffload o) : offload(std::move(o)) {}
  CheckpointOffload offload;
  int64_t slot = -1;
};

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList params,
                            c10::IValue fn, c10::IValue offload) {
    ctx->saved_data["fn"] = fn;
    ctx->saved_data["offload"] = offload;
    auto* holder = offload.isNone() ? nullptr
                                    : static_cast<OffloadHolder*>(offload.toCapsule().get());
    variable_list saved;
    if (holder != nullptr && holder->offload.stash) {
      holder->slot = holder->offload.offloader->Stash(x);
      saved.push_back(at::Tensor());  // x lives in the offloader
    } else {
      saved.push_back(x);
    }
    if (holder != nullptr && holder->offload.stashed_slot != nullptr) {
      *holder->offload.stashed_slot = holder->slot;
      holder->offload.stashed_slot = nullptr;  // the caller's variable: forward only
    }
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    at::NoGradGuard no_grad;
    return static_cast<FnHolder*>(fn.toCapsule().get())->fn(x);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list saved = ctx->get_saved_variables();
    c10::IValue offload = ctx->saved_data["offload"];
    auto* holder = offload.isNone() ? nullptr
                                    : static_cast<OffloadHolder*>(offload.toCapsule().get());
    at::Tensor x = saved[0];
    if (holder != nullptr && holder->slot >= 0) x = holder->offload.offloader->Fetch(holder->slot);
    // The previous block's input comes back while this block recomputes.
    if (holder != nullptr && holder->offload.prefetch_slot >= 0) {
      holder->offload.offloader->Prefetch(holder->offload.prefetch_slot);
    }
    variable_list inputs;
    inputs.push_back(x.detach().requires_grad_(true));
    x.reset();
    saved[0].reset();
    for (size_t i = 1; i < saved.size(); ++i) inputs.push_back(saved[i]);
    saved.clear();
    at::Tensor out;
    {
      torch::autograd::AutoGradMode grad_mode(true);
      out = Held(ctx)(inputs[0]);
    }
    variable_list grads = GradsOf(std::move(out), grad_outputs[0], inputs);
    grads.push_back(at::Tensor());  // for the fn argument
    grads.push_back(at::Tensor());  // for the offload argument
    return grads;
  }
};

// fn over tiles of x along dim; forward without grad into one output.
at::Tensor TiledForward(const TensorFn& fn, const at::Tensor& x, int64_t dim, int64_t tile) {
  const int64_t n = x.size(dim);
  at::Tensor out;
  for (int64_t s = 0; s < n; s += tile) {
    const int64_t len = std::min(tile, n - s);
    at::Tensor y = fn(x.narrow(dim, s, len));
    KP_CHECK(y.dim() == x.dim() && y.size(dim) == len);
    if (len == n) return y;  // one tile
    if (!out.defined()) {
      std::vector<int64_t> shape = y.sizes().vec();
      shape[static_cast<size_t>(dim)] = n;
      out = at::empty(shape, y.options());
    }
    out.narrow(dim, s, len).copy_(y);
  }
  return out;
}

struct TiledFunction : public torch::autograd::Function<TiledFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList params,
                            int64_t dim, int64_t tile, bool reuse_grad_out, c10::IValue fn) {
    ctx->saved_data["fn"] = fn;
    ctx->saved_data["dim"] = dim;
    ctx->saved_data["tile"] = tile;
    ctx->saved_data["reuse"] = reuse_grad_out;
    variable_list saved{x};
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    at::NoGradGuard no_grad;
    return TiledForward(static_cast<FnHolder*>(fn.toCapsule().get())->fn, x, dim, tile);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list saved = ctx->get_saved_variables();
    const at::Tensor x = saved[0];
    variable_list params(saved.begin() + 1, saved.end());
    saved.clear();
    const int64_t dim = ctx->saved_data["dim"].toInt();
    const int64_t tile = ctx->saved_data["tile"].toInt();
    const TensorFn& fn = Held(ctx);
    const at::Tensor& grad_out = grad_outputs[0];
    const int64_t n = x.size(dim);
    // Tile s of grad_out is read (by GradsOf) before tile s of grad_x is
    // written, and no tile reads another's rows: the two may share memory.
    const bool in_place = ctx->saved_data["reuse"].toBool() && grad_out.sizes() == x.sizes() &&
                          grad_out.scalar_type() == x.scalar_type() &&
                          grad_out.is_non_overlapping_and_dense();
    at::Tensor grad_x = in_place ? grad_out : at::empty_like(x, at::MemoryFormat::Contiguous);
    variable_list grad_params(params.size());
    for (int64_t s = 0; s < n; s += tile) {
      const int64_t len = std::min(tile, n - s);
      variable_list inputs{x.narrow(dim, s, len).detach().requires_grad_(true)};
      inputs.insert(inputs.end(), params.begin(), params.end());
      at::Tensor y;
      {
        torch::autograd::AutoGradMode grad_mode(true);
        y = fn(inputs[0]);
      }
      variable_list grads = GradsOf(std::move(y), grad_out.narrow(dim, s, len), inputs);
      grad_x.narrow(dim, s, len).copy_(grads[0]);
      for (size_t i = 0; i < params.size(); ++i) {
        if (grad_params[i].defined()) {
          grad_params[i].add_(grads[i + 1]);
        } else {
          grad_params[i] = std::move(grads[i + 1]);
        }
      }
    }
    variable_list out{grad_x};
    out.insert(out.end(), grad_params.begin(), grad_params.end());
    out.push_back(at::Tensor());  // dim
    out.push_back(at::Tensor());  // tile
    out.push_back(at::Tensor());  // reuse_grad_out
    out.push_back(at::Tensor());  // fn
    return out;
  }
};

// Sum of the rows' cross entropies, softmax in at least fp32. `fused`: bf16
// CUDA logits go through the fused kernel (fp32 math, no fp32 copy of the
// logits; backward overwrites the logits, which the head's backward does
// not need).
at::Tensor ChunkLossSum(const TensorFn& head, const at::Tensor& hidden_chunk,
                        const at::Tensor& target_chunk, bool fused) {
  at::Tensor logits = head(hidden_chunk);
  if (fused && logits.dim() == 2 && FusedKernelsApply(logits.device(), logits.scalar_type())) {
    return FusedCrossEntropySum(logits, target_chunk);
  }
  logits = logits.to(LossDtype(logits));
  return at::cross_entropy_loss(logits, target_chunk, /*weight=*/{}, at::Reduction::Sum);
}

struct ChunkedCrossEntropyFunction
    : public torch::autograd::Function<ChunkedCrossEntropyFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& hidden, at::TensorList params,
                            const at::Tensor& targets, int64_t chunk, bool fused,
                            c10::IValue head) {
    ctx->saved_data["fn"] = head;
    ctx->saved_data["chunk"] = chunk;
    ctx->saved_data["fused"] = fused;
    variable_list saved{hidden, targets};
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    at::NoGradGuard no_grad;
    const TensorFn& fn = static_cast<FnHolder*>(head.toCapsule().get())->fn;
    const int64_t n = hidden.size(0);
    at::Tensor total = at::zeros({}, hidden.options().dtype(LossDtype(hidden)));
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t len = std::min(chunk, n - s);
      total += ChunkLossSum(fn, hidden.narrow(0, s, len), targets.narrow(0, s, len), fused);
    }
    return total / static_cast<double>(n);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list saved = ctx->get_saved_variables();
    const at::Tensor& hidden = saved[0];
    const at::Tensor& targets = saved[1];
    variable_list params(saved.begin() + 2, saved.end());
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const bool fused = ctx->saved_data["fused"].toBool();
    const TensorFn& fn = Held(ctx);
    const int64_t n = hidden.size(0);
    // d(mean)/d(row loss) = 1/N, times the upstream gradient.
    at::Tensor scale = grad_outputs[0] / static_cast<double>(n);
    at::Tensor grad_hidden = at::empty_like(hidden);
    variable_list grad_params;
    for (const at::Tensor& p : params) grad_params.push_back(at::zeros_like(p));
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t len = std::min(chunk, n - s);
      variable_list inputs{hidden.narrow(0, s, len).detach().requires_grad_(true)};
      inputs.insert(inputs.end(), params.begin(), params.end());
      at::Tensor loss;
      {
        torch::autograd::AutoGradMode grad_mode(true);
        loss = ChunkLossSum(fn, inputs[0], targets.narrow(0, s, len), fused);
      }
      variable_list grads = GradsOf(loss, scale.to(loss.scalar_type()), inputs);
      grad_hidden.narrow(0, s, len).copy_(grads[0]);
      for (size_t i = 0; i < params.size(); ++i) grad_params[i].add_(grads[i + 1]);
    }
    variable_list out{grad_hidden};
    out.insert(out.end(), grad_params.begin(), grad_params.end());
    out.push_back(at::Tensor());  // targets
    out.push_back(at::Tensor());  // chunk
    out.push_back(at::Tensor());  // fused
    out.push_back(at::Tensor());  // head
    return out;
  }
};

}  // namespace

at::Tensor CheckpointedCall(const TensorFn& fn, const at::Tensor& x,
                            const std::vector<at::Tensor>& params,
                            const CheckpointOffload& offload) {
  if (offload.stashed_slot != nullptr) *offload.stashed_slot = -1;
  if (!at::GradMode::is_enabled()) return fn(x);
  c10::IValue held_offload;  // None
  if (offload.offloader) {
    held_offload = c10::IValue::make_capsule(c10::make_intrusive<OffloadHolder>(offload));
  }
  return CheckpointFunction::apply(x, at::TensorList(params), Hold(fn), held_offload);
}

at::Tensor TiledCall(const TensorFn& fn, const at::Tensor& x,
                     const std::vector<at::Tensor>& params, int64_t dim, int64_t tile,
                     bool reuse_grad_out) {
  KP_CHECK(tile > 0 && dim >= 0 && dim < x.dim());
  if (!at::GradMode::is_enabled()) return TiledForward(fn, x, dim, tile);
  return TiledFunction::apply(x, at::TensorList(params), dim, tile, reuse_grad_out, Hold(fn));
}

at::Tensor ChunkedCrossEntropy(const at::Tensor& hidden, const at::Tensor& targets,
                               const TensorFn& head, const std::vector<at::Tensor>& head_params,
                               int64_t chunk_tokens, bool fused) {
  KP_CHECK(hidden.dim() == 2 && targets.dim() == 1 && hidden.size(0) == targets.size(0));
  KP_CHECK(chunk_tokens > 0);
  if (!at::GradMode::is_enabled()) {
    at::Tensor total = at::zeros({}, hidden.options().dtype(LossDtype(hidden)));
    const int64_t n = hidden.size(0);
    for (int64_t s = 0; s < n; s += chunk_tokens) {
      const int64_t len = std::min(chunk_tokens, n - s);
      total += ChunkLossSum(head, hidden.narrow(0, s, len), targets.narrow(0, s, len), fused);
    }
    return total / static_cast<double>(n);
  }
  if (chunk_tokens >= hidden.size(0)) {
    // One chunk: plain autograd keeps the logits instead of recomputing the
    // head in backward (faster; chunk to bound memory instead).
    return ChunkLossSum(head, hidden, targets, fused) / static_cast<double>(hidden.size(0));
  }
  return ChunkedCrossEntropyFunction::apply(hidden, at::TensorList(head_params), targets,
                                            chunk_tokens, fused, Hold(head));
}

}  // namespace kp::engine
