#include "launcher/slurm/cluster_flags.h"

namespace kp::launcher {

void AddClusterFlags(CLI::App* cmd, ClusterFlags* f, const std::string& launcher) {
  cmd->add_option("--coordinator", f->coordinator,
                  "HOST:PORT of a running kp-coordinator; default: start one on node 0 [KP_COORDINATOR]");
  cmd->add_option("--token_file", f->token_file,
                  "bearer token file; default: a fresh token under --run_root (shared filesystem) "
                  "[KP_TOKEN_FILE]");
  cmd->add_option("--grace-seconds", f->grace_seconds,
                  "SIGTERM to SIGKILL for workers: time to write the checkpoint [KP_GRACE_SECONDS]")
      ->capture_default_str();
  cmd->add_option("--register-timeout", f->register_timeout_s,
                  "seconds to wait for agents / the coordinator [KP_REGISTER_TIMEOUT_S]")
      ->capture_default_str();
  cmd->add_flag("--resume", f->resume, "continue from the newest checkpoint [KP_RESUME=1]");
  if (launcher == "k8s") {
    cmd->add_option("--nodes", f->nodes, "pods in the Indexed Job")->required();
    cmd->add_option("--node-index", f->node_index, "this pod's index (default: JOB_COMPLETION_INDEX)");
    cmd->add_option("--agent-port", f->agent_port, "unused: agents only dial out");
    return;
  }
  cmd->add_option("--coordinator-address", f->coordinator_address,
                  "node 0's address, instead of resolving its name [KP_COORDINATOR_ADDRESS]");
  cmd->add_option("--port-base", f->port_base,
                  "fixed port block instead of the one derived from the job id [KP_PORT_BASE]");
  if (launcher == "slurm") {
    cmd->add_option("--node-address", f->node_address,
                    "this node's address, instead of resolving its name [KP_NODE_ADDRESS]");
  }
  if (launcher == "mpi") {
    cmd->add_option("--rendezvous-file", f->rendezvous_file,
                    "shared file where rank 0 publishes its coordinator address [KP_RENDEZVOUS_FILE]");
  }
}

absl::Status ApplyClusterEnv(const EnvLookup& env, ClusterFlags* f) {
  auto str = [&](const char* name, std::string* field) {
    if (field->empty()) {
      if (auto v = env(name); v.has_value()) *field = *v;
    }
  };
  str("KP_COORDINATOR", &f->coordinator);
  str("KP_COORDINATOR_ADDRESS", &f->coordinator_address);
  str("KP_NODE_ADDRESS", &f->node_address);
  str("KP_TOKEN_FILE", &f->token_file);
  str("KP_RENDEZVOUS_FILE", &f->rendezvous_file);
  if (f->port_base == 0) {
    KP_ASSIGN_OR_RETURN(int64_t base, EnvInt(env, "KP_PORT_BASE", 0, 0));
    if (base > 65535 - 16) return absl::InvalidArgumentError("KP_PORT_BASE must be below 65520");
    f->port_base = static_cast<int>(base);
  }
  if (!f->resume) {
    KP_ASSIGN_OR_RETURN(int64_t resume, EnvInt(env, "KP_RESUME", 0, 0));
    f->resume = resume != 0;
  }
  if (auto v = env("KP_GRACE_SECONDS"); v.has_value() && f->grace_seconds == 90) {
    KP_ASSIGN_OR_RETURN(int64_t g, EnvInt(env, "KP_GRACE_SECONDS", 90, 1));
    f->grace_seconds = static_cast<int>(g);
  }
  if (auto v = env("KP_REGISTER_TIMEOUT_S"); v.has_value() && f->register_timeout_s == 120) {
    KP_ASSIGN_OR_RETURN(int64_t t, EnvInt(env, "KP_REGISTER_TIMEOUT_S", 120, 1));
    f->register_timeout_s = static_cast<int>(t);
  }
  return absl::OkStatus();
}

}  // namespace kp::launcher
