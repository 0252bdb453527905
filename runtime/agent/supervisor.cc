#include "runtime/agent/supervisor.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <set>

#include <yaml-cpp/yaml.h>

#include "runtime/common/files.h"

namespace kp::agent {
namespace {

std::string Key(const v1::Assignment& a) {
  return a.job_id() + "/" + std::to_string(a.generation()) + "/" + std::to_string(a.rank());
}

std::string Lower(std::string s, const std::string& prefix) {
  s = s.substr(prefix.size());
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

absl::StatusOr<std::string> RenderWorkerConfig(const std::string& yaml, const v1::Assignment& a,
                                               const std::string& data_path) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(std::string("job config is not YAML: ") + e.what());
  }
  if (!root.IsMap()) return absl::InvalidArgumentError("job config must be a YAML mapping");
  root["parallel"]["dp"] = a.dp();
  root["parallel"]["cp"] = a.cp();
  switch (a.cp_mode()) {
    case v1::CP_MODE_RING:
    case v1::CP_MODE_ZIGZAG:  // the engine's ring attention balances causal work with the zigzag layout
      root["parallel"]["cp_mode"] = "ring";
      break;
    case v1::CP_MODE_ALLGATHER:
      root["parallel"]["cp_mode"] = "allgather";
      break;
    case v1::CP_MODE_ULYSSES:
      root["parallel"]["cp_mode"] = "ulysses";
      break;
    default:
      break;
  }
  if (a.precision() != v1::PRECISION_UNSPECIFIED) root["precision"] = Lower(v1::Precision_Name(a.precision()), "PRECISION_");
  if (a.in_process_shrink()) root["fault"]["in_process_shrink"] = true;  // JobSpec.in_process_shrink
  if (!data_path.empty()) {
    root["data"]["corpus"] = "path";
    root["data"]["path"] = data_path;
  }
  if (a.checkpoint_every_steps() > 0) root["training"]["checkpoint_every"] = a.checkpoint_every_steps();
  if (a.checkpoint_keep_last() > 0) root["training"]["keep_checkpoints"] = a.checkpoint_keep_last();
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

WorkerPaths PathsFor(const SupervisorOptions& options, const v1::Assignment& a) {
  WorkerPaths p;
  p.run_dir = options.run_root + "/" + a.run_name();
  const std::string tag = "g" + std::to_string(a.generation()) + ".rank" + std::to_string(a.rank());
  p.config = p.run_dir + "/config.yaml";
  p.metrics = p.run_dir + "/metrics/" + tag + ".jsonl";
  p.stdout_log = p.run_dir + "/logs/" + tag + ".out";
  p.stderr_log = p.run_dir + "/logs/" + tag + ".err";
  p.rendezvous_dir = p.run_dir + "/rendezvous/g" + std::to_string(a.generation());
  return p;
}

absl::StatusOr<std::pair<std::vector<std::string>, std::vector<std::string>>> WorkerCommand(
    const SupervisorOptions& options, const v1::Assignment& a, const WorkerPaths& paths) {
  const std::string config = paths.config;
  std::vector<std::string> argv = {options.worker_binary};
  argv.insert(argv.end(), options.worker_args.begin(), options.worker_args.end());
  const bool cuda = a.device_kind() == v1::DEVICE_KIND_CUDA;
  auto add = [&](const std::string& flag, const std::string& value) {
    argv.push_back(flag);
    argv.push_back(value);
  };
  add("--config", config);
  add("--run_dir", paths.run_dir);
  add("--steps", std::to_string(a.steps()));
  add("--device", cuda ? "cuda" : "cpu");
  add("--rank", std::to_string(a.rank()));
  add("--world_size", std::to_string(a.world_size()));
  add("--local_rank", std::to_string(a.device_index()));
  add("--rendezvous", paths.rendezvous_dir);
  add("--metrics_jsonl", paths.metrics);
  if (a.resume()) argv.push_back("--resume");
  // In-memory snapshots (runtime/snapshot/worker_snapshots.h).
  if (a.snapshot_every_steps() > 0 && a.snapshot_targets_size() > 0) {
    add("--snapshot_every", std::to_string(a.snapshot_every_steps()));
    for (const auto& t : a.snapshot_targets()) add("--snapshot_target", t);
  }
  if (a.resume() && !a.resume_snapshot_address().empty()) {
    add("--resume_snapshot", std::to_string(a.resume_snapshot_step()) + "@" + a.resume_snapshot_address());
  }

  std::vector<std::string> env = {
      "KP_JOB_ID=" + a.job_id(),
      "KP_GENERATION=" + std::to_string(a.generation()),
      "KP_RANK=" + std::to_string(a.rank()),
      "KP_WORLD_SIZE=" + std::to_string(a.world_size()),
      "KP_DP=" + std::to_string(a.dp()),
      "KP_CP=" + std::to_string(a.cp()),
      "KP_DP_INDEX=" + std::to_string(a.dp_index()),
      "KP_CP_INDEX=" + std::to_string(a.cp_index()),
      "KP_LOCAL_RANK=" + std::to_string(a.local_rank()),
      "KP_LOCAL_WORLD_SIZE=" + std::to_string(a.local_world_size()),
      "KP_DEVICE_INDEX=" + std::to_string(a.device_index()),
      "KP_SHARD_INDEX=" + std::to_string(a.shard_index()),
      "KP_NUM_SHARDS=" + std::to_string(a.num_shards()),
      "KP_RENDEZVOUS_ADDRESS=" + a.coordinator_address(),
      "KP_RENDEZVOUS_PREFIX=" + a.rendezvous_prefix(),
      "KP_CP_MODE=" + Lower(v1::CpMode_Name(a.cp_mode()), "CP_MODE_"),
      "KP_PRECISION=" + Lower(v1::Precision_Name(a.precision()), "PRECISION_"),
  };
  if (!options.token_file.empty()) env.push_back("KP_TOKEN_FILE=" + options.token_file);
  if (!options.tls_ca_file.empty()) env.push_back("KP_TLS_CA=" + options.tls_ca_file);
  if (!a.data_path().empty()) {
    if (options.data_root.empty()) return absl::FailedPreconditionError("job has a data_path but no --data_root");
    KP_ASSIGN_OR_RETURN(std::string data, ResolveUnderRoot(options.data_root, a.data_path()));
    env.push_back("KP_DATA_PATH=" + data);
  }
  if (!a.checkpoint_dir().empty()) {
    if (options.checkpoint_root.empty()) {
      return absl::FailedPreconditionError("job has a checkpoint dir but no --checkpoint_root");
    }
    KP_ASSIGN_OR_RETURN(std::string ckpt, ResolveUnderRoot(options.checkpoint_root, a.checkpoint_dir()));
    env.push_back("KP_CHECKPOINT_DIR=" + ckpt);
  }
  return std::make_pair(std::move(argv), std::move(env));
}

Supervisor::Supervisor(ProcessLauncher* launcher, Clock* clock, SupervisorOptions options)
    : launcher_(launcher), clock_(clock), options_(std::move(options)) {}

void Supervisor::StartWorker(Worker& w) {
  const v1::Assignment& a = w.assignment;
  const WorkerPaths paths = PathsFor(options_, a);
  auto fail = [&](const absl::Status& st) {
    w.state = v1::WORKER_STATE_START_FAILED;
    w.exit_code = 127;
    w.message = std::string(st.message());
    spdlog::error("job {} rank {}: cannot start worker: {}", a.job_id(), a.rank(), w.message);
  };
  for (const auto& dir : {paths.run_dir + "/logs", paths.run_dir + "/metrics", paths.rendezvous_dir}) {
    if (absl::Status st = MakeDirs(dir); !st.ok()) return fail(st);
  }
  std::string yaml = a.config_yaml();
  if (!a.config_path().empty()) {
    if (options_.config_root.empty()) {
      return fail(absl::FailedPreconditionError("job uses config_path " + a.config_path() +
                                                " but this agent has no --config_root"));
    }
    auto path = ResolveUnderRoot(options_.config_root, a.config_path());
    if (!path.ok()) return fail(path.status());
    auto text = ReadFile(*path);
    if (!text.ok()) return fail(text.status());
    yaml = *text;
  }
  std::string data_path;
  if (!a.data_path().empty()) {
    if (options_.data_root.empty()) {
      return fail(absl::FailedPreconditionError("job has a data_path but this agent has no --data_root"));
    }
    auto resolved = ResolveUnderRoot(options_.data_root, a.data_path());
    if (!resolved.ok()) return fail(resolved.status());
    data_path = *resolved;
  }
  auto rendered = RenderWorkerConfig(yaml, a, data_path);
  if (!rendered.ok()) return fail(rendered.status());
  // Every rank of the job on this node writes the same text; atomic writes
  // make that harmless.
  if (absl::Status st = WriteFileAtomically(paths.config, *rendered); !st.ok()) return fail(st);
  // A metrics file left by an earlier attempt would report stale progress.
  std::remove(paths.metrics.c_str());
  auto cmd = WorkerCommand(options_, a, paths);
  if (!cmd.ok()) return fail(cmd.status());
  ProcessSpec spec;
  spec.argv = cmd->first;
  spec.env = cmd->second;
  spec.cwd = paths.run_dir;
  spec.stdout_path = paths.stdout_log;
  spec.stderr_path = paths.stderr_log;
  auto handle = launcher_->Start(spec);
  if (!handle.ok()) return fail(handle.status());
  w.handle = *handle;
  w.state = v1::WORKER_STATE_RUNNING;
  w.metrics = std::make_unique<MetricsTail>(paths.metrics);
  spdlog::info("job {} generation {} rank {}/{}: started worker (device {}), logs in {}", a.job_id(),
               a.generation(), a.rank(), a.world_size(), a.device_index(), paths.run_dir + "/logs");
}

void Supervisor::RequestStop(Worker& w) {
  w.stopping = true;
  if (w.state != v1::WORKER_STATE_RUNNING) return;
  w.term_sent_micros = clock_->NowMicros();
  spdlog::info("job {} rank {}: stopping worker (SIGTERM)", w.assignment.job_id(), w.assignment.rank());
  launcher_->Signal(w.handle, SIGTERM);
}

void Supervisor::Reconcile(const std::vector<v1::Assignment>& desired) {
  std::set<std::string> wanted;
  for (const auto& a : desired) {
    const std::string key = Key(a);
    wanted.insert(key);
    if (workers_.count(key)) continue;
    Worker& w = workers_[key];
    w.assignment = a;
    StartWorker(w);
  }
  for (auto it = workers_.begin(); it != workers_.end();) {
    Worker& w = it->second;
    if (wanted.count(it->first)) {
      ++it;
      continue;
    }
    if (w.state != v1::WORKER_STATE_RUNNING) {
      it = workers_.erase(it);  // ended and no longer wanted: forget it
      continue;
    }
    if (!w.stopping) RequestStop(w);
    ++it;
  }
}

bool Supervisor::Poll() {
  bool exited = false;
  const int64_t now = clock_->NowMicros();
  for (auto it = workers_.begin(); it != workers_.end();) {
    Worker& w = it->second;
    if (w.metrics) w.metrics->Poll();
    if (w.state == v1::WORKER_STATE_RUNNING) {
      if (auto code = launcher_->Poll(w.handle)) {
        w.state = v1::WORKER_STATE_EXITED;
        w.exit_code = *code;
        if (w.metrics) w.metrics->Poll();  // the last lines before exit
        exited = true;
        spdlog::log(*code == 0 || w.stopping ? spdlog::level::info : spdlog::level::warn,
                    "job {} rank {}: worker exited with code {}", w.assignment.job_id(), w.assignment.rank(), *code);
      } else if (w.stopping && !w.killed && now - w.term_sent_micros >= options_.stop_grace_micros) {
        spdlog::warn("job {} rank {}: worker ignored SIGTERM for {} ms: SIGKILL", w.assignment.job_id(),
                     w.assignment.rank(), options_.stop_grace_micros / 1000);
        launcher_->Signal(w.handle, SIGKILL);
        w.killed = true;
      }
    }
    if (w.stopping && w.state != v1::WORKER_STATE_RUNNING) {
      it = workers_.erase(it);
      continue;
    }
    ++it;
  }
  return exited;
}

std::vector<v1::WorkerReport> Supervisor::Reports() const {
  std::vector<v1::WorkerReport> out;
  for (const auto& [key, w] : workers_) {
    if (w.stopping) continue;
    v1::WorkerReport r;
    r.set_job_id(w.assignment.job_id());
    r.set_generation(w.assignment.generation());
    r.set_rank(w.assignment.rank());
    r.set_state(w.state);
    r.set_exit_code(w.exit_code);
    r.set_message(w.message);
    if (w.metrics) {
      r.set_step(w.metrics->progress().step);
      r.set_loss(w.metrics->progress().loss);
      r.set_tokens_per_s(w.metrics->progress().tokens_per_s);
      // The rank's own step time (every rank), for straggler detection.
      if (w.metrics->progress().timed_step >= 0) {
        r.set_timed_step(w.metrics->progress().timed_step);
        r.set_compute_s(w.metrics->progress().compute_s);
        r.set_comm_wait_s(w.metrics->progress().comm_wait_s);
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

int Supervisor::live_workers() const {
  int n = 0;
  for (const auto& [key, w] : workers_) n += w.state == v1::WORKER_STATE_RUNNING;
  return n;
}

void Supervisor::StopAll() {
  Reconcile({});
  while (true) {
    Poll();
    if (live_workers() == 0) break;
    clock_->SleepMicros(20'000);
  }
  workers_.clear();
}

}  // namespace kp::agent
