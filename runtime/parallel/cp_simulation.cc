#include "runtime/parallel/cp_simulation.h"

#include <ATen/ATen.h>

#include "runtime/common/status.h"
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
  const at::ScalarType acc_dt = AccumulationDtype(q[0]);
  auto tasks = [&](int r, int src) {
    return PlanBlocks(ZigzagSegments(r, n, chunk), ZigzagSegments(src, n, chunk), options.causal);
  };
  // As the ring does: each rank packs its K/V into one buffer per pass.
  std::vector<at::Tensor> kv(n);
  for (int r = 0; r < n; ++r) kv[r] = at::stack({k[r], v[r]}).contiguous();

  SimulatedRanks res;
  std::vector<at::Tensor> lse(n);
  for (int r = 0; r < n; ++r) {
    MergeAccumulator acc = MakeAccumulator(q[r]);
    for (int t = 0; t < n; ++t) {
      const int src = (r - t + n) % n;
      RunForwardTasks(q[r], kv[src][0], kv[src][1], tasks(r, src), scale, options.backend,
                      options.merge, acc);
    }
    res.out.push_back(acc.out.to(q[r].scalar_type()));
    lse[r] = acc.lse;
  }

  for (int r = 0; r < n; ++r) kv[r] = at::stack({k[r], v[r]}).contiguous();
  std::vector<at::Tensor> dkv(n);
  for (int r = 0; r < n; ++r) dkv[r] = at::zeros(kv[r].sizes(), kv[r].options().dtype(acc_dt));
  for (int r = 0; r < n; ++r) {
    at::Tensor dq = at::zeros(q[r].sizes(), q[r].options().dtype(acc_dt));
    for (int t = 0; t < n; ++t) {
      const int src = (r - t + n) % n;
      // As the ring does: this rank's share goes straight into block src's
      // travelling dK/dV accumulator.
      RunBackwardTasks(dout[r], q[r], kv[src][0], kv[src][1], res.out[r], lse[r], tasks(r, src),
                       scale, options.backend, dq,
                       [&dkv, src] { return std::make_pair(dkv[src][0], dkv[src][1]); });
    }
    res.dq.push_back(dq.to(q[r].scalar_type()));
  }
  for (int r = 0; r < n; ++r) {
    res.dk.push_back(dkv[r][0].to(k[r].scalar_type()));
    res.dv.push_back(dkv[r][1].to(v[r].scalar_type()));
  }
  return res;
}

}  // namespace kp::parallel
