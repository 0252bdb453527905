// One process of mpi_bootstrap_test.sh: reads its real MPI environment,
// plans, and finds rank 0's coordinator address through the rendezvous file,
// exactly as `kprun mpi` does before starting daemons. Writes
// "rank size local_rank flavour target" to OUT_DIR/rank.N.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "launcher/mpi/mpi_env.h"
#include "launcher/mpi/mpi_plan.h"
#include "launcher/mpi/rendezvous_file.h"
#include "runtime/common/files.h"

int main(int argc, char** argv) {
  using namespace kp::launcher;
  if (argc != 3) {
    std::fprintf(stderr, "usage: mpi_probe RENDEZVOUS_FILE OUT_DIR\n");
    return 2;
  }
  auto task = ParseMpiTask(ProcessEnvironment());
  if (!task.ok()) {
    std::fprintf(stderr, "%s\n", task.status().ToString().c_str());
    return 1;
  }
  JobShape shape;
  shape.dp = task->size;
  MpiPlanOptions options;
  options.rendezvous_file = argv[1];
  options.coordinator_address = "127.0.0.1";
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  auto plan = MakeMpiPlan(*task, shape, options, host);
  if (!plan.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", task->rank, plan.status().ToString().c_str());
    return 1;
  }
  std::string target = plan->coordinator_target;
  kp::RealClock clock;
  if (plan->start_coordinator) {
    if (auto s = PublishCoordinator(options.rendezvous_file, task->job_key, target); !s.ok()) {
      std::fprintf(stderr, "rank 0: %s\n", s.ToString().c_str());
      return 1;
    }
  } else {
    auto awaited = AwaitCoordinator(options.rendezvous_file, task->job_key, 20'000'000, clock);
    if (!awaited.ok()) {
      std::fprintf(stderr, "rank %d: %s\n", task->rank, awaited.status().ToString().c_str());
      return 1;
    }
    target = *awaited;
  }
  std::string line = std::to_string(task->rank) + " " + std::to_string(task->size) + " " +
                     std::to_string(task->local_rank) + " " + task->flavour + " " + target +
                     " " + (plan->start_coordinator ? "coordinator" : "agent") + "\n";
  auto s = kp::WriteFileAtomically(std::string(argv[2]) + "/rank." + std::to_string(task->rank),
                                   line);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
