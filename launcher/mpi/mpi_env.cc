#include "launcher/mpi/mpi_env.h"

#include "absl/strings/str_cat.h"

namespace kp::launcher {
namespace {

struct Flavour {
  const char* name;
  const char* rank;
  const char* size;
  const char* local_rank;  // may be nullptr
  const char* local_size;  // may be nullptr
};

// In order of preference: OpenMPI also sets PMIX_RANK, and Hydra-based
// launchers under Slurm may also set PMI_RANK.
constexpr Flavour kFlavours[] = {
    {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"},
    {"mvapich", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK",
     "MV2_COMM_WORLD_LOCAL_SIZE"},
    {"hydra", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
    {"pmix", "PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK", "PMIX_LOCAL_SIZE"},
};

}  // namespace

absl::StatusOr<MpiTask> ParseMpiTask(const EnvLookup& env) {
  for (const Flavour& f : kFlavours) {
    bool has_rank = env(f.rank).has_value();
    bool has_size = env(f.size).has_value();
    if (!has_rank && !has_size) continue;
    if (has_rank != has_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          has_rank ? f.rank : f.size, " is set but ", has_rank ? f.size : f.rank,
          " is not: a partial ", f.name, " environment"));
    }
    MpiTask task;
    task.flavour = f.name;
    KP_ASSIGN_OR_RETURN(int64_t size, EnvInt(env, f.size, std::nullopt, 1));
    KP_ASSIGN_OR_RETURN(int64_t rank, EnvInt(env, f.rank, std::nullopt, 0));
    if (rank >= size) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.rank, "=", rank, " is not below ", f.size, "=", size));
    }
    int64_t local_rank = 0, local_size = 0;
    if (f.local_rank != nullptr) {
      KP_ASSIGN_OR_RETURN(local_rank, EnvInt(env, f.local_rank, 0));
    }
    if (f.local_size != nullptr) {
      KP_ASSIGN_OR_RETURN(local_size, EnvInt(env, f.local_size, 0));
    }
    if (local_size > 0 && local_rank >= local_size) {
      return absl::InvalidArgumentError(absl::StrCat(f.local_rank, "=", local_rank,
                                                     " is not below ", f.local_size, "=",
                                                     local_size));
    }
    if (local_size > size) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.local_size, "=", local_size, " exceeds ", f.size, "=", size));
    }
    task.rank = static_cast<int>(rank);
    task.size = static_cast<int>(size);
    task.local_rank = static_cast<int>(local_rank);
    task.local_size = static_cast<int>(local_size);
    for (const char* key_var : {"OMPI_MCA_ess_base_jobid", "PMIX_NAMESPACE", "PMI_KVSNAME",
                                "MPIRUN_ID"}) {
      if (auto v = env(key_var); v.has_value() && !v->empty()) {
        task.job_key = *v;
        break;
      }
    }
    if (task.job_key.empty()) {
      auto job = env("SLURM_JOB_ID");
      auto step = env("SLURM_STEP_ID");
      if (job.has_value()) task.job_key = absl::StrCat(*job, ".", step.value_or("0"));
    }
    return task;
  }
  return absl::FailedPreconditionError(
      "not started by mpirun (none of OMPI_COMM_WORLD_RANK, PMI_RANK, MV2_COMM_WORLD_RANK, "
      "PMIX_RANK is set): run `mpirun -np N kprun mpi JOB.yaml`, or `kprun local` on one "
      "machine");
}

int64_t JobKeyNumber(const std::string& job_key) {
  // Always hashed, even when numeric: OpenMPI's job ids are (launcher hash
  // << 16) | 1, which would land on only 3 of the 768 port slots.
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : job_key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return static_cast<int64_t>(h >> 1);
}

}  // namespace kp::launcher
