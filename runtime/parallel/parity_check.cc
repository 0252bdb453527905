#include "runtime/parallel/parity_check.h"

#include <array>
#include <string>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include "absl/strings/str_cat.h"
#include "runtime/parallel/cp_attention.h"
#include "runtime/parallel/cp_log.h"
#include "runtime/parallel/local_attention.h"
#include "runtime/parallel/zigzag.h"

namespace kp::parallel {
namespace {

constexpr std::array<const char*, 4> kNames = {"out", "dq", "dk", "dv"};

double DefaultTolerance(at::ScalarType dt) {
  if (dt == at::kDouble) return 1e-9;
  if (dt == at::kFloat) return 1e-4;
  return 3e-2;
}

}  // namespace

absl::Status CheckCpParity(comm::Communicator& comm, const ParityConfig& config) {
  const int cp = comm.size(), rank = comm.rank();
  const int64_t seq = config.seq_len > 0 ? config.seq_len : 16 * cp;
  KP_RETURN_IF_ERROR(ValidateZigzag(seq, cp));
  const double tol = config.tolerance > 0 ? config.tolerance : DefaultTolerance(config.dtype);

  // The same input on every rank: a CPU generator with the shared seed.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(config.seed);
  const at::TensorOptions cpu = at::TensorOptions().dtype(at::kFloat);
  auto make = [&](int64_t h) {
    return at::randn({config.batch, h, seq, config.head_dim}, gen, cpu)
        .to(config.device, config.dtype);
  };
  const at::Tensor q_full = make(config.heads), k_full = make(config.kv_heads),
                   v_full = make(config.kv_heads), dout_full = make(config.heads);

  // Single rank: the local attention path the job would run without CP.
  at::Tensor q1 = q_full.clone().set_requires_grad(true);
  at::Tensor k1 = k_full.clone().set_requires_grad(true);
  at::Tensor v1 = v_full.clone().set_requires_grad(true);
  LocalAttentionOptions local;
  local.causal = config.options.causal;
  local.scale = config.options.scale;
  local.backend = config.options.backend;
  const std::vector<Segment> whole = {{0, seq, 0}};
  at::Tensor out1 = std::get<0>(LocalAttentionWithLse(q1, k1, v1, whole, whole, local));
  torch::autograd::backward({out1}, {dout_full});

  // Context parallel: this rank's zigzag shards.
  auto shard = [&](const at::Tensor& t) { return ZigzagShard(t.detach(), 2, cp, rank); };
  KP_ASSIGN_OR_RETURN(at::Tensor q, shard(q_full));
  KP_ASSIGN_OR_RETURN(at::Tensor k, shard(k_full));
  KP_ASSIGN_OR_RETURN(at::Tensor v, shard(v_full));
  KP_ASSIGN_OR_RETURN(at::Tensor dout, shard(dout_full));
  q.set_requires_grad(true);
  k.set_requires_grad(true);
  v.set_requires_grad(true);
  KP_ASSIGN_OR_RETURN(at::Tensor out, ContextParallelAttention(q, k, v, &comm, config.options));
  try {
    torch::autograd::backward({out}, {dout});
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("CP parity check: backward failed on rank ", rank,
                                            ": ", e.what()));
  }

  const std::array<at::Tensor, 4> got = {out.detach(), q.grad(), k.grad(), v.grad()};
  const std::array<at::Tensor, 4> want = {out1.detach(), q1.grad(), k1.grad(), v1.grad()};
  // Per tensor: [abs error, reference magnitude]; max over ranks.
  at::Tensor stats = at::zeros({8}, at::TensorOptions().dtype(at::kFloat));
  for (size_t i = 0; i < got.size(); ++i) {
    KP_ASSIGN_OR_RETURN(at::Tensor ref, shard(want[i]));
    const at::Tensor diff = (got[i].to(at::kDouble) - ref.to(at::kDouble)).abs();
    // NaN anywhere must fail: treat it as an infinite error.
    const double err = diff.isnan().any().item<bool>() ? INFINITY : diff.max().item<double>();
    stats[2 * i] = err;
    stats[2 * i + 1] = ref.to(at::kDouble).abs().max().item<double>();
  }
  at::Tensor shared = stats.to(config.device);
  KP_RETURN_IF_ERROR(comm.AllReduce(shared, comm::ReduceOp::kMax));
  stats = shared.cpu();

  std::string failures;
  for (size_t i = 0; i < kNames.size(); ++i) {
    const double abs_err = stats[2 * i].item<double>();
    const double scale = std::max(stats[2 * i + 1].item<double>(), 1e-12);
    const double rel = abs_err / scale;
    if (!(rel <= tol)) {
      absl::StrAppend(&failures, failures.empty() ? "" : "; ", kNames[i], ": max abs error ",
                      abs_err, ", max rel error ", rel);
    }
  }
  const std::string what = absl::StrCat(
      "mode ", CpModeName(config.options.mode), ", cp ", cp, ", ", config.heads, " heads / ",
      config.kv_heads, " kv heads, seq ", seq, ", head dim ", config.head_dim, ", ",
      c10::toString(config.dtype), " on ", config.device.str());
  if (!failures.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "context-parallel parity check failed (", what, "; tolerance ", tol,
        " relative to the largest reference value): ", failures,
        ". Refusing to train: the CP attention disagrees with single-rank attention."));
  }
  if (rank == 0) LogInfo(absl::StrCat("context-parallel parity check passed (", what, ")"));
  return absl::OkStatus();
}

}  // namespace kp::parallel
