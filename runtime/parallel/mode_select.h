// Picking a context-parallel mode from the attention shapes and the topology.
//
// The rule estimates, per rank and per attention layer (forward + backward),
// the communication time each mode cannot hide behind attention compute, and
// takes the smallest (ties: ring, then all-gather, then Ulysses):
//   ring:       K/V blocks (n_kv_heads wide) pass N-1 hops, each overlapped
//               with one block of attention; in the backward the K/V pass
//               again and each rank's dK/dV shares (K/V's dtype) go to their
//               owners. Exposed: per hop, max(0, transfer - compute).
//   all-gather: K/V gathered once before attention, dK/dV (fp32)
//               reduce-scattered after: (N-1)/N of the full K/V, not hidden.
//   Ulysses:    four all-to-alls over heads each way (q, k, v, out / dout,
//               dq, dk, dv), (N-1)/N of each local tensor, not hidden; needs
//               n_heads % N == 0 (K/V heads are expanded when n_kv_heads % N
//               != 0, which makes them as large as q).
// N = 1 is always a pass-through ("none").
#ifndef KP_RUNTIME_PARALLEL_MODE_SELECT_H_
#define KP_RUNTIME_PARALLEL_MODE_SELECT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace kp::parallel {

enum class CpMode { kAuto, kNone, kRing, kAllGather, kUlysses };

std::string CpModeName(CpMode mode);
absl::StatusOr<CpMode> ParseCpMode(const std::string& name);  // auto|none|ring|allgather|ulysses

struct CpShape {
  int64_t batch = 1;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t seq_len = 0;  // total (all ranks)
  int64_t head_dim = 0;
  int64_t element_bytes = 2;  // bf16
};

struct CpTopology {
  int cp = 1;
  int ranks_per_node = 8;          // the cp group spans nodes when cp > ranks_per_node
  double intra_node_gbps = 300.0;  // GB/s per direction per GPU (NVLink)
  double inter_node_gbps = 50.0;   // GB/s per GPU across nodes (400 Gb/s NIC)
  double attention_tflops = 500.0; // achieved dense attention throughput
};

struct CpModeChoice {
  CpMode mode = CpMode::kNone;
  std::string reason;  // the estimates behind the choice, for the log
  double ring_exposed_ms = 0, allgather_exposed_ms = 0, ulysses_exposed_ms = 0;
};

// requested != kAuto: validates that the mode is possible for the shapes and
// returns it. kAuto: applies the rule above. Logs the choice and why (spdlog
// info) when log is set.
absl::StatusOr<CpModeChoice> ChooseCpMode(const CpShape& shape, const CpTopology& topology,
                                          CpMode requested = CpMode::kAuto, bool log = true);

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_MODE_SELECT_H_
