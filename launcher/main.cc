// kprun: run a kp job. `kprun local JOB.yaml` does everything on this machine;
// submit/status/list/cancel/watch talk to a running kp-coordinator.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <map>

#include <CLI/CLI.hpp>

#include "launcher/client.h"
#include "launcher/job_file.h"
#include "launcher/k8s/k8s_commands.h"
#include "launcher/launcher.h"
#include "launcher/mpi/mpi_launcher.h"
#include "launcher/progress.h"
#include "launcher/slurm/cluster_flags.h"
#include "launcher/slurm/launch_flags.h"
#include "launcher/slurm/slurm_launcher.h"
#include "runtime/common/logging.h"
#include "runtime/coordinator/rpc.h"

namespace {

using kp::launcher::CoordinatorClient;

struct Remote {
  std::string address = "127.0.0.1:50051";
  std::string token_file;
  std::string tls_ca;
};

void AddRemoteFlags(CLI::App* cmd, Remote* r) {
  cmd->add_option("--coordinator", r->address, "kp-coordinator host:port")->capture_default_str();
  cmd->add_option("--token_file", r->token_file, "bearer token file")->required();
  cmd->add_option("--tls_ca", r->tls_ca, "PEM CA certificate: connect with TLS");
}

absl::StatusOr<std::unique_ptr<CoordinatorClient>> Connect(const Remote& r) {
  KP_ASSIGN_OR_RETURN(std::string token, kp::rpc::ReadTokenFile(r.token_file));
  return CoordinatorClient::Connect({r.address, token, r.tls_ca, 10000});
}

int Fail(const absl::Status& st) {
  std::fprintf(stderr, "kprun: %s\n", st.ToString().c_str());
  return absl::IsInvalidArgument(st) || absl::IsPermissionDenied(st) ? 2 : 1;
}

void PrintJob(const kp::v1::JobStatus& j) {
  std::printf("%-9s %-24s %-10s gen %-3lld dp %d cp %d  %s%s%s\n", j.job_id().c_str(), j.spec().name().c_str(),
              kp::launcher::StateName(j.state()).c_str(), static_cast<long long>(j.generation()), j.spec().dp(),
              j.spec().cp(), kp::launcher::FormatProgress(j.progress(), 10).c_str(), j.message().empty() ? "" : "  ",
              j.message().c_str());
}

int WatchJob(CoordinatorClient& client, const std::string& id) {
  kp::launcher::ProgressPrinter printer(stdout, ::isatty(STDOUT_FILENO));
  auto st = client.Watch(id, [&](const kp::v1::JobEvent& e) { printer.OnEvent(e); });
  printer.Finish();
  if (!st.ok()) return Fail(st.status());
  return kp::launcher::ExitCodeFor(*st);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kprun: run kp training jobs"};
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--log_level", log_level, "daemon log level inside kprun")->capture_default_str();

  kp::launcher::LaunchOptions launch;
  auto add_launch_flags = [&](CLI::App* cmd) {
    cmd->add_option("job", launch.job_file, "job file (YAML)")->required();
    cmd->add_option("--worker_binary", launch.worker_binary, "worker program (default: kp-train next to kprun)");
    cmd->add_option("--worker_arg", launch.worker_args, "extra worker flag (repeatable)");
    cmd->add_option("--run_root", launch.run_root, "run directories go here")->capture_default_str();
    cmd->add_option("--config_root", launch.config_root, "root for config_path (default: .)");
    cmd->add_option("--data_root", launch.data_root, "root for data (default: .)");
    cmd->add_option("--checkpoint_root", launch.checkpoint_root, "root for checkpoint.dir (default: RUN_ROOT/checkpoints)");
    cmd->add_option("--cpu_slots", launch.cpu_slots, "offer N CPU devices instead of GPUs");
    cmd->add_option("--stop_grace_ms", launch.stop_grace_ms, "SIGTERM to SIGKILL")->capture_default_str();
    cmd->add_flag("--quiet", launch.quiet, "only the final line");
  };
  std::map<std::string, CLI::App*> launchers;
  launchers["local"] = app.add_subcommand("local", "run a job on this machine (embedded coordinator + agent)");
  launchers["slurm"] = app.add_subcommand("slurm", "run a job inside a Slurm allocation (srun, one task per node)");
  launchers["mpi"] = app.add_subcommand("mpi", "run a job under mpirun (one process per node)");
  for (auto& [name, cmd] : launchers) add_launch_flags(cmd);
  // `kprun k8s render JOB.yaml ...` and `kprun k8s run JOB.yaml ...` (the rendered pods' entry point).
  kp::launcher::K8sCommands k8s;
  kp::launcher::AddK8sCommands(app.add_subcommand("k8s", "Kubernetes: render a job's manifests, or run as a pod of them"), &k8s);
  // The cluster launchers (launcher/slurm, launcher/mpi, launcher/k8s) add
  // their own flags; each also ships as a standalone kprun-<name> binary.
  kp::launcher::ClusterFlags cluster;
  for (const char* name : {"slurm", "mpi"}) kp::launcher::AddClusterFlags(launchers[name], &cluster, name);

  Remote remote;
  std::string job_id, reason;
  bool follow = false;
  auto* submit = app.add_subcommand("submit", "submit a job file to a running coordinator");
  submit->add_option("job", launch.job_file, "job file (YAML)")->required();
  submit->add_flag("--watch", follow, "then watch it until it ends");
  AddRemoteFlags(submit, &remote);
  auto* status = app.add_subcommand("status", "show one job");
  status->add_option("job_id", job_id)->required();
  AddRemoteFlags(status, &remote);
  auto* list = app.add_subcommand("list", "list jobs and agents");
  AddRemoteFlags(list, &remote);
  auto* cancel = app.add_subcommand("cancel", "cancel a job");
  cancel->add_option("job_id", job_id)->required();
  cancel->add_option("--reason", reason);
  AddRemoteFlags(cancel, &remote);
  auto* watch = app.add_subcommand("watch", "stream a job's progress until it ends");
  watch->add_option("job_id", job_id)->required();
  AddRemoteFlags(watch, &remote);
  CLI11_PARSE(app, argc, argv);

  kp::InitLogging({.role = "kprun", .level = log_level});
  if (app.got_subcommand("k8s")) return kp::launcher::RunK8sCommands(&k8s);

  for (auto& [name, cmd] : launchers) {
    if (!cmd->parsed()) continue;
    if (name != "local") {
      if (int rc = kp::launcher::PrepareLaunch(name, &launch); rc != 0) return rc;
      if (name == "slurm") return kp::launcher::NewSlurmLauncher(&cluster)->Launch(launch);
      return kp::launcher::NewMpiLauncher(&cluster)->Launch(launch);
    }
    auto spec = kp::launcher::LoadJobFile(launch.job_file);
    if (!spec.ok()) return Fail(spec.status());
    launch.spec = *spec;
    // Blocked before the embedded daemons start threads; the local launcher
    // turns them into a cancel.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    return kp::launcher::NewLocalLauncher()->Launch(launch);
  }

  auto client = Connect(remote);
  if (!client.ok()) return Fail(client.status());
  CoordinatorClient& c = **client;
  if (submit->parsed()) {
    auto spec = kp::launcher::LoadJobFile(launch.job_file);
    if (!spec.ok()) return Fail(spec.status());
    auto job = c.Submit(*spec);
    if (!job.ok()) return Fail(job.status());
    std::printf("%s\n", job->job_id().c_str());
    std::fflush(stdout);
    return follow ? WatchJob(c, job->job_id()) : 0;
  }
  if (status->parsed()) {
    auto job = c.Get(job_id);
    if (!job.ok()) return Fail(job.status());
    PrintJob(*job);
    return 0;
  }
  if (list->parsed()) {
    auto jobs = c.List();
    if (!jobs.ok()) return Fail(jobs.status());
    for (const auto& j : *jobs) PrintJob(j);
    auto agents = c.ListAgents();
    if (!agents.ok()) return Fail(agents.status());
    for (const auto& a : *agents) {
      std::printf("agent %-20s %-6s %d device(s)\n", a.info().agent_id().c_str(),
                  a.state() == kp::v1::AGENT_STATE_ALIVE ? "alive" : "lost", a.info().devices_size());
    }
    return 0;
  }
  if (cancel->parsed()) {
    auto job = c.Cancel(job_id, reason);
    if (!job.ok()) return Fail(job.status());
    PrintJob(*job);
    return 0;
  }
  if (watch->parsed()) return WatchJob(c, job_id);
  return 2;
}
