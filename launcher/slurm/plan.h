// What one kprun task does inside a Slurm allocation, decided before any
// daemon starts: which node hosts the coordinator, where every agent dials
// it, which ports this job uses, and whether the job fits the allocation.
//
// Every task computes the same plan from the same environment, so the tasks
// need no exchange before the coordinator is up.
//
// Termination (see deploy/slurm/README.md): scancel and the time limit
// deliver SIGTERM to every task (sbatch --signal=B:TERM@120 gives the batch
// script a head start; it forwards TERM to srun). kprun passes SIGTERM to its
// agent, whose workers write a checkpoint within `grace_seconds` and exit 0;
// the job stops cleanly. A requeued job (SLURM_RESTART_COUNT > 0) or
// `--resume` sets `resume`, and the job continues from its newest checkpoint.
#ifndef KP_LAUNCHER_SLURM_PLAN_H_
#define KP_LAUNCHER_SLURM_PLAN_H_

#include <cstdint>
#include <string>

#include "launcher/slurm/job_shape.h"
#include "launcher/slurm/ports.h"
#include "launcher/slurm/resolve.h"
#include "launcher/slurm/slurm_env.h"

namespace kp::launcher {

struct SlurmPlanOptions {
  // HOST:PORT of a coordinator that already runs: no task starts one.
  std::string coordinator;
  // Node 0's address, instead of resolving its name (emulated nodes whose
  // names resolve nowhere; a fabric interface other than the name's).
  std::string coordinator_address;
  // This node's address for its agent, instead of resolving its name.
  std::string node_address;
  // > 0: a fixed port block (PortsAt) instead of the job-id derived one.
  int port_base = 0;
  // CPU-only allocations: worker slots per node; 0 takes SLURM_CPUS_ON_NODE.
  int cpu_slots_per_node = 0;
  // Continue from the newest checkpoint even on the first run.
  bool resume = false;
  // Seconds the workers get between SIGTERM and SIGKILL; keep it below the
  // head start of sbatch --signal (120 in deploy/slurm/kp.sbatch).
  int grace_seconds = 90;
};

enum class SlotKind { kGpu, kCpu };

struct SlurmPlan {
  int64_t job_id = 0;
  int node_index = 0;
  int num_nodes = 0;
  std::string node_name;
  std::string node_address;    // where this node's agent is reached
  bool start_coordinator = false;  // this task runs the embedded coordinator
  bool submit = false;             // this task submits the job and streams progress
  std::string coordinator_target;  // HOST:PORT every agent dials
  JobPorts ports;
  int agent_port = 0;
  SlotKind slot_kind = SlotKind::kGpu;
  int slots_per_node = 0;
  int64_t total_slots = 0;
  int64_t world = 0;  // dp * cp
  bool resume = false;
  int grace_seconds = 0;
};

// Fails (before anything starts) with:
//  INVALID_ARGUMENT  more than one task on a node (kprun wants
//                    srun --ntasks-per-node=1), a malformed --coordinator;
//  RESOURCE_EXHAUSTED dp x cp above the allocation's GPUs (or CPU slots),
//                    naming both numbers and what to change;
//  NOT_FOUND         a node name that does not resolve, saying which option
//                    gives the address instead.
absl::StatusOr<SlurmPlan> MakeSlurmPlan(const SlurmTask& task, const JobShape& shape,
                                        const SlurmPlanOptions& options,
                                        const Resolver& resolve = ResolveHost);

// The allocation check alone (also used by the MPI launcher): `nodes` nodes
// with `gpus_per_node` GPUs each, or `cpu_slots_per_node` CPU slots each when
// they have no GPU.
absl::Status CheckShapeFits(const JobShape& shape, int nodes, int gpus_per_node,
                            int cpu_slots_per_node, const std::string& what_to_change);

std::string SlotKindName(SlotKind kind);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_SLURM_PLAN_H_
