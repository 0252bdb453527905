#include "runtime/parallel/cp_simulation.h"

#include <ATen/ATen.h>

#include "runtime/common/status.h"
#include "runtime/parallel/block_fold.h"
#include "runtime/parallel/zigzag.h"

namespace kp::parallel {

SimulatedRanks SimulateRingAttention(const std::vector<at::Tensor>& q,
                                     const std::vector<at::Tensor>& k,
                                     const std::vector<at::Tensor>& v,
                                     const std::vector<at::Tensor>& dout,
                                     const LocalAttentionOptions& options) {
  const int n = static_cast<int>(q.size());
  KP_CHECK(n >= 1 && k.size() == q.size() && v.size() == q.size() && dout.size() == q.size());
  const double scale = ResolveScale(options.scale, q[0]);
  const int64_t chunk = q[0].size(2) / 2;
  auto tasks = [&](int r, int src) {
    return PlanBlocks(ZigzagSegments(r, n, chunk), ZigzagSegments(src, n, chunk), options.causal);
  };
  // As the ring does: each rank packs its K/V into one buffer, once (the
  // backward reuses it).
  std::vector<at::Tensor> kv(n);
  for (int r = 0; r < n; ++r) kv[r] = at::stack({k[r], v[r]});

  SimulatedRanks res;
  std::vector<at::Tensor> lse(n);
  for (int r = 0; r < n; ++r) {
    BlockFolder merged(BlockFolder::Kind::kLseMerge, q[r], options.merge);
    for (int t = 0; t < n; ++t) {
      const int src = (r - t + n) % n;
      RunForwardTasks(q[r], kv[src][0], kv[src][1], tasks(r, src), scale, options.backend,
                      merged);
    }
    auto [out, l] = merged.Finish(q[r].scalar_type());
    res.out.push_back(out);
    lse[r] = l;
  }

  // Step by step as the ring runs: at step t rank r adds its share of block
  // r - t's dK/dV into that block's travelling accumulator, and step N - 1
  // is every block's last share.
  std::vector<BlockFolder> dq;
  for (int r = 0; r < n; ++r) dq.emplace_back(BlockFolder::Kind::kSum, q[r]);
  std::vector<at::Tensor> dkv(n);
  for (int t = 0; t < n; ++t) {
    for (int r = 0; r < n; ++r) {
      const int src = (r - t + n) % n;
      BlockFolder dk(BlockFolder::Kind::kSum, kv[src][0]), dv(BlockFolder::Kind::kSum, kv[src][1]);
      RunBackwardTasks(dout[r], q[r], kv[src][0], kv[src][1], res.out[r], lse[r], tasks(r, src),
                       scale, options.backend, dq[r], dk, dv);
      dkv[src] = FoldKvGrads(dk, dv, dkv[src], kv[src], t + 1 == n);
    }
  }
  for (int r = 0; r < n; ++r) {
    res.dq.push_back(dq[r].Finish(q[r].scalar_type()).first);
    res.dk.push_back(dkv[r][0]);
    res.dv.push_back(dkv[r][1]);
  }
  return res;
}

}  // namespace kp::parallel
