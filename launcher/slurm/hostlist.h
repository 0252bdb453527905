// Slurm hostlist expressions (SLURM_JOB_NODELIST, SLURM_TASKS_PER_NODE),
// parsed here so kprun never has to call scontrol on a compute node (which
// needs the controller, and may not be installed in a container).
#ifndef KP_LAUNCHER_SLURM_HOSTLIST_H_
#define KP_LAUNCHER_SLURM_HOSTLIST_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/common/status.h"

namespace kp::launcher {

// Hard cap on the hosts one expression may expand to: a typo such as
// `n[1-100000000]` must fail, not allocate gigabytes.
inline constexpr size_t kMaxHostlistHosts = 1 << 16;

// Expands a hostlist expression into host names, in Slurm's order:
//   "gpu[01-04,07]"     -> gpu01 gpu02 gpu03 gpu04 gpu07  (zero padding kept:
//                          the width of a range's lower bound)
//   "n[1-3,7],login1"   -> n1 n2 n3 n7 login1
//   "a[1-2]b[3-4]"      -> a1b3 a1b4 a2b3 a2b4  (several bracket groups: the
//                          cartesian product, leftmost group slowest)
// Errors (INVALID_ARGUMENT) quote the offending part: unbalanced or nested
// brackets, empty names or ranges, a range whose end is below its start,
// non-digits inside brackets, more than kMaxHostlistHosts hosts.
absl::StatusOr<std::vector<std::string>> ExpandHostlist(std::string_view expression);

// Expands SLURM_TASKS_PER_NODE ("2(x3),1" -> 2 2 2 1): one count per node, in
// node-list order.
absl::StatusOr<std::vector<int>> ExpandTasksPerNode(std::string_view expression);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_SLURM_HOSTLIST_H_
