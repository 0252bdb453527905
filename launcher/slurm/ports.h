// TCP ports for one job's daemons, derived from the job id so that two jobs
// sharing a node (several jobs per node, or emulated nodes on one host) never
// pick the same ports, and every task of a job computes the same numbers
// without talking to the others.
//
// Formula (documented in deploy/slurm/README.md):
//   slot  = job_id mod 768
//   block = base + 16 * slot            (base defaults to 20000)
//   coordinator gRPC = block
//   coordinator metrics = block + 1
//   agent on node i  = block + 2 + (i mod 14)
// With the default base every port lies in [20000, 32287], below Linux's
// ephemeral range (32768-60999), so no outgoing connection can take it.
// Two jobs collide only when their ids are congruent mod 768; Slurm hands out
// ids sequentially, so that means 768 jobs apart. `--port-base` moves the
// block (then: block = base, no slot) when a site reserves other ranges.
#ifndef KP_LAUNCHER_SLURM_PORTS_H_
#define KP_LAUNCHER_SLURM_PORTS_H_

#include <cstdint>

namespace kp::launcher {

inline constexpr int kDefaultPortBase = 20000;
inline constexpr int kPortSlots = 768;
inline constexpr int kPortsPerJob = 16;
inline constexpr int kAgentPortsPerJob = kPortsPerJob - 2;

struct JobPorts {
  int coordinator = 0;
  int metrics = 0;
  int agent_base = 0;

  // Distinct for the first kAgentPortsPerJob nodes of a job, which is what
  // emulated nodes on one host need; real nodes are distinct hosts anyway.
  int agent(int node_index) const { return agent_base + node_index % kAgentPortsPerJob; }
};

// The ports of job `job_id` under the default base.
JobPorts PortsForJob(int64_t job_id);

// A fixed block starting at `base` (a user's --port-base): no job-id slot.
JobPorts PortsAt(int base);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_SLURM_PORTS_H_
