#include "launcher/slurm/slurm_env.h"

#include <numeric>

#include "absl/strings/str_cat.h"
#include "launcher/slurm/hostlist.h"

namespace kp::launcher {
namespace {

// The step's variable when srun set it (a step may span fewer nodes than the
// job), else the job's.
std::optional<std::pair<std::string, std::string>> FirstSet(const EnvLookup& env,
                                                            std::initializer_list<const char*> names) {
  for (const char* name : names) {
    std::optional<std::string> v = env(name);
    if (v.has_value() && !v->empty()) return std::make_pair(std::string(name), *v);
  }
  return std::nullopt;
}

absl::Status Annotate(const absl::Status& status, const std::string& name) {
  return absl::Status(status.code(), absl::StrCat(name, ": ", status.message()));
}

}  // namespace

absl::StatusOr<SlurmTask> ParseSlurmTask(const EnvLookup& env) {
  SlurmTask task;
  auto job = FirstSet(env, {"SLURM_JOB_ID", "SLURM_JOBID"});
  if (!job.has_value()) {
    return absl::FailedPreconditionError(
        "not inside a Slurm allocation (SLURM_JOB_ID is unset): run `kprun slurm` under srun, "
        "e.g. `sbatch deploy/slurm/kp.sbatch JOB.yaml` or `srun -N2 --ntasks-per-node=1 kprun "
        "slurm JOB.yaml` inside salloc; use `kprun local` on a single machine");
  }
  KP_ASSIGN_OR_RETURN(task.job_id, EnvInt(env, job->first, std::nullopt, 1));

  auto nodelist = FirstSet(env, {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"});
  if (!nodelist.has_value()) {
    return absl::InvalidArgumentError(
        "SLURM_JOB_NODELIST is unset although SLURM_JOB_ID is set: is this a Slurm task?");
  }
  auto nodes = ExpandHostlist(nodelist->second);
  if (!nodes.ok()) return Annotate(nodes.status(), nodelist->first);
  task.nodes = *std::move(nodes);

  auto tpn = FirstSet(env, {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"});
  if (tpn.has_value()) {
    auto counts = ExpandTasksPerNode(tpn->second);
    if (!counts.ok()) return Annotate(counts.status(), tpn->first);
    task.tasks_per_node = *std::move(counts);
    if (task.tasks_per_node.size() != task.nodes.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          tpn->first, "='", tpn->second, "' covers ", task.tasks_per_node.size(), " nodes but ",
          nodelist->first, "='", nodelist->second, "' has ", task.nodes.size()));
    }
  } else {
    task.tasks_per_node.assign(task.nodes.size(), 1);
  }
  int total = std::accumulate(task.tasks_per_node.begin(), task.tasks_per_node.end(), 0);

  KP_ASSIGN_OR_RETURN(int64_t node_id, EnvInt(env, "SLURM_NODEID", 0));
  KP_ASSIGN_OR_RETURN(int64_t proc_id, EnvInt(env, "SLURM_PROCID", 0));
  KP_ASSIGN_OR_RETURN(int64_t local_id, EnvInt(env, "SLURM_LOCALID", 0));
  auto ntasks_var = FirstSet(env, {"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"});
  int64_t ntasks = total;
  if (ntasks_var.has_value()) {
    KP_ASSIGN_OR_RETURN(ntasks, EnvInt(env, ntasks_var->first, std::nullopt, 1));
  }
  if (node_id >= static_cast<int64_t>(task.nodes.size())) {
    return absl::InvalidArgumentError(absl::StrCat("SLURM_NODEID=", node_id, " but ",
                                                   nodelist->first, " has only ",
                                                   task.nodes.size(), " nodes"));
  }
  if (ntasks != total) {
    return absl::InvalidArgumentError(absl::StrCat(
        ntasks_var->first, "=", ntasks, " disagrees with ", tpn.has_value() ? tpn->first : "",
        "='", tpn.has_value() ? tpn->second : "", "' (", total, " tasks)"));
  }
  if (proc_id >= ntasks) {
    return absl::InvalidArgumentError(
        absl::StrCat("SLURM_PROCID=", proc_id, " is not below the task count ", ntasks));
  }
  if (local_id >= task.tasks_per_node[node_id]) {
    return absl::InvalidArgumentError(absl::StrCat("SLURM_LOCALID=", local_id, " but node ",
                                                   node_id, " runs ",
                                                   task.tasks_per_node[node_id], " tasks"));
  }
  task.node_id = static_cast<int>(node_id);
  task.proc_id = static_cast<int>(proc_id);
  task.local_id = static_cast<int>(local_id);
  task.ntasks = static_cast<int>(ntasks);

  std::optional<std::string> cvd = env("CUDA_VISIBLE_DEVICES");
  if (cvd.has_value() && !cvd->empty() && *cvd != "NoDevFiles") {
    size_t start = 0;
    while (start <= cvd->size()) {
      size_t comma = cvd->find(',', start);
      if (comma == std::string::npos) comma = cvd->size();
      if (comma > start) task.visible_devices.push_back(cvd->substr(start, comma - start));
      start = comma + 1;
    }
  }
  KP_ASSIGN_OR_RETURN(
      int64_t gpus,
      EnvInt(env, "SLURM_GPUS_ON_NODE", static_cast<int64_t>(task.visible_devices.size())));
  task.gpus_on_node = static_cast<int>(gpus);
  KP_ASSIGN_OR_RETURN(int64_t cpus, EnvInt(env, "SLURM_CPUS_ON_NODE", 0));
  task.cpus_on_node = static_cast<int>(cpus);
  KP_ASSIGN_OR_RETURN(int64_t restarts, EnvInt(env, "SLURM_RESTART_COUNT", 0));
  task.restart_count = static_cast<int>(restarts);
  return task;
}

}  // namespace kp::launcher
