#include "runtime/parallel/mode_select.h"

#include <algorithm>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"

namespace kp::parallel {
namespace {

constexpr double kFp32Bytes = 4.0;

absl::Status ValidateShape(const CpShape& s, const CpTopology& t) {
  if (t.cp < 1) return absl::InvalidArgumentError(absl::StrCat("cp must be >= 1, got ", t.cp));
  if (s.heads <= 0 || s.kv_heads <= 0 || s.head_dim <= 0 || s.seq_len <= 0 || s.batch <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention shape must be positive: batch ", s.batch, ", heads ", s.heads, ", kv_heads ",
        s.kv_heads, ", seq_len ", s.seq_len, ", head_dim ", s.head_dim));
  }
  if (s.heads % s.kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("n_heads (", s.heads,
                                                   ") must be a multiple of n_kv_heads (",
                                                   s.kv_heads, ")"));
  }
  if (t.cp > 1 && s.seq_len % (2 * t.cp) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sequence length ", s.seq_len, " is not divisible by 2*cp = ", 2 * t.cp,
        " (zigzag load balancing); use a multiple of ", 2 * t.cp));
  }
  return absl::OkStatus();
}

}  // namespace

std::string CpModeName(CpMode mode) {
  switch (mode) {
    case CpMode::kAuto:
      return "auto";
    case CpMode::kNone:
      return "none";
    case CpMode::kRing:
      return "ring";
    case CpMode::kAllGather:
      return "allgather";
    case CpMode::kUlysses:
      return "ulysses";
  }
  return "unknown";
}

absl::StatusOr<CpMode> ParseCpMode(const std::string& name) {
  for (CpMode m : {CpMode::kAuto, CpMode::kNone, CpMode::kRing, CpMode::kAllGather,
                   CpMode::kUlysses}) {
    if (CpModeName(m) == name) return m;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown context-parallel mode '", name, "'; valid: auto, none, ring, allgather, ulysses"));
}

absl::StatusOr<CpModeChoice> ChooseCpMode(const CpShape& s, const CpTopology& t,
                                          CpMode requested, bool log) {
  if (absl::Status st = ValidateShape(s, t); !st.ok()) return st;
  CpModeChoice c;
  const int n = t.cp;
  if (n == 1) {
    c.mode = CpMode::kNone;
    c.reason = "cp = 1: local attention, no communication";
    if (log) spdlog::info("context parallel: mode none ({})", c.reason);
    return c;
  }
  const bool ulysses_ok = s.heads % n == 0;
  if (requested == CpMode::kUlysses && !ulysses_ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ulysses needs n_heads divisible by cp: n_heads ", s.heads, ", cp ", n,
        "; use ring or allgather, or a cp that divides ", s.heads));
  }
  if (requested == CpMode::kNone) {
    return absl::InvalidArgumentError(
        absl::StrCat("mode none is only valid with cp = 1, got cp = ", n));
  }

  const double e = static_cast<double>(s.element_bytes);
  const bool cross_node = n > t.ranks_per_node;
  const double bw = (cross_node ? t.inter_node_gbps : t.intra_node_gbps) * 1e9;
  const double flops = t.attention_tflops * 1e12;
  const double local = static_cast<double>(s.seq_len) / n;
  const double b = static_cast<double>(s.batch), d = static_cast<double>(s.head_dim);
  const double h = static_cast<double>(s.heads), hkv = static_cast<double>(s.kv_heads);
  // Causal forward FLOPs of the whole layer, 4*B*H*T^2*D/2, spread evenly
  // (zigzag) over n ranks and n ring steps.
  const double total_fwd = 2.0 * b * h * static_cast<double>(s.seq_len) *
                           static_cast<double>(s.seq_len) * d;
  const double step_fwd_s = total_fwd / n / n / flops;
  const double kv_local = 2.0 * b * hkv * local * d;  // elements
  const double hops = n - 1;

  const double ring_fwd = hops * std::max(0.0, kv_local * e / bw - step_fwd_s);
  // Backward: per step the K/V pass on and the previous step's dK/dV shares
  // (K/V's dtype, at most a block) go to their owners, behind the step's
  // backward compute; the last step's shares leave after it.
  const double ring_bwd = hops * std::max(0.0, kv_local * 2 * e / bw - 2 * step_fwd_s) +
                          kv_local * e / bw;
  c.ring_exposed_ms = (ring_fwd + ring_bwd) * 1e3;
  c.allgather_exposed_ms = hops * kv_local * (e + kFp32Bytes) / bw * 1e3;
  if (ulysses_ok) {
    const double hkv_a2a = s.kv_heads % n == 0 ? hkv : h;
    const double q_local = b * h * local * d;
    const double per_dir = (2 * q_local + 2.0 * b * hkv_a2a * local * d) * e * hops / n / bw;
    c.ulysses_exposed_ms = 2 * per_dir * 1e3;
  } else {
    c.ulysses_exposed_ms = -1;
  }

  const std::string estimates = fmt::format(
      "estimated exposed communication per layer fwd+bwd: ring {:.3f} ms, allgather {:.3f} ms, "
      "ulysses {} (cp {} {} at {:.0f} GB/s, {} heads / {} kv heads, seq {}, head dim {})",
      c.ring_exposed_ms, c.allgather_exposed_ms,
      ulysses_ok ? fmt::format("{:.3f} ms", c.ulysses_exposed_ms)
                 : absl::StrCat("n/a (", s.heads, " heads not divisible by cp)"),
      n, cross_node ? "across nodes" : "within a node", bw / 1e9, s.heads, s.kv_heads, s.seq_len,
      s.head_dim);

  if (requested != CpMode::kAuto) {
    c.mode = requested;
    c.reason = absl::StrCat("requested by the job; ", estimates);
  } else {
    struct Candidate {
      CpMode mode;
      double ms;
    };
    std::vector<Candidate> cands = {{CpMode::kRing, c.ring_exposed_ms},
                                    {CpMode::kAllGather, c.allgather_exposed_ms}};
    if (ulysses_ok) cands.push_back({CpMode::kUlysses, c.ulysses_exposed_ms});
    Candidate best = cands[0];
    for (const Candidate& x : cands) {
      if (x.ms < best.ms - 1e-9) best = x;
    }
    c.mode = best.mode;
    c.reason = absl::StrCat("auto: least exposed communication; ", estimates);
  }
  if (log) spdlog::info("context parallel: mode {} ({})", CpModeName(c.mode), c.reason);
  return c;
}

}  // namespace kp::parallel
