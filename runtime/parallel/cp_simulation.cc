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

  // As the ring does: each rank's dK/dV share of a block goes to the block's
  // owner, who folds its own gradients once, from every rank's shares.
  std::vector<BlockFolder> dk, dv;
  for (int r = 0; r < n; ++r) {
    dk.emplace_back(BlockFolder::Kind::kSum, kv[r][0]);
    dv.emplace_back(BlockFolder::Kind::kSum, kv[r][1]);
  }
  for (int r = 0; r < n; ++r) {
    BlockFolder dq(BlockFolder::Kind::kSum, q[r]);
    for (int t = 0; t < n; ++t) {
      const int src = (r - t + n) % n;
      RunBackwardTasks(dout[r], q[r], kv[src][0], kv[src][1], res.out[r], lse[r], tasks(r, src),
                       scale, options.backend, dq, dk[src], dv[src]);
    }
    res.dq.push_back(dq.Finish(q[r].scalar_type()).first);
  }
  for (int r = 0; r < n; ++r) {
    res.dk.push_back(dk[r].Finish(k[r].scalar_type()).first);
    res.dv.push_back(dv[r].Finish(v[r].scalar_type()).first);
  }
  return res;
}

}  // namespace kp::parallel
