// kp-train: one training worker. Every failure (bad flags, bad config,
// missing data, a checkpoint that does not fit, a NaN under nan_policy stop)
// ends with a message naming the cause and a nonzero exit status.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <CLI/CLI.hpp>

#include "absl/strings/str_format.h"
#include "runtime/engine/log.h"
#include "runtime/worker/fault/exit_codes.h"
#include "runtime/worker/fault/parent_death.h"
#include "runtime/worker/fault/stop_signal.h"
#include "runtime/worker/run_training.h"

int main(int argc, char** argv) {
  const pid_t parent_at_start = getppid();  // the agent, when started by one
  // First, before any thread exists: SIGTERM/SIGINT become a stop request
  // the loop honours at the next step boundary (with a checkpoint).
  kp::worker::fault::StopSignal stop_signal(kp::worker::fault::StopSignal::Options{});
  // Under `bazel run` the process starts in the runfiles tree; relative
  // --config and --run_dir paths mean the caller's directory.
  if (const char* cwd = std::getenv("BUILD_WORKING_DIRECTORY"); cwd != nullptr && *cwd != '\0') {
    if (chdir(cwd) != 0) std::perror("chdir BUILD_WORKING_DIRECTORY");
  }
  CLI::App app{"kp-train: trains a transformer from a kp config (configs/README.md)"};
  std::string config_path;
  kp::worker::RunOptions o;
  int64_t steps = 0;
  app.add_option("--config", config_path, "YAML config file")->required();
  app.add_option("--run_dir", o.run_dir, "checkpoints, corpus cache, metrics")->required();
  app.add_option("--steps", steps, "override training.steps");
  app.add_option("--device", o.device, "cpu | cuda | auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--rank", o.rank, "data-parallel rank");
  app.add_option("--world_size", o.world_size, "number of ranks");
  app.add_option("--local_rank", o.local_rank, "CUDA device index on this node");
  app.add_option("--rendezvous", o.rendezvous, "shared directory for the ranks' file store");
  app.add_option("--metrics_jsonl", o.metrics_jsonl, "per-step JSON lines (default run_dir/metrics.jsonl)");
  app.add_flag("--resume", o.resume, "continue from the newest complete checkpoint in run_dir");
  app.add_flag("--allow_schedule_change", o.allow_schedule_change,
               "with --resume: accept a learning-rate schedule (steps, lr, warmup) other than the checkpoint's");
  app.add_option("--comm_timeout_ms", o.comm_timeout_ms, "collective timeout (0: the backend's default)");
  app.add_option("--comm_backend", o.comm_backend,
                 "nccl | gloo (default: nccl on CUDA, gloo on CPU); gloo on CUDA stages every "
                 "transfer through host memory, so several ranks can share one GPU (tests)")
      ->check(CLI::IsMember({"", "nccl", "gloo"}));
  app.add_option("--profile_steps", o.profile_steps, "profile steps A..B-1 ('A:B') into a Chrome trace");
  app.add_option("--profile_trace", o.profile_trace, "trace path (default run_dir/profile_rank<r>.json)");
  app.add_option("--threads", o.threads, "CPU intra-op threads (default 1; 0: one per core)");
  std::string resume_snapshot;
  app.add_option("--snapshot_every", o.snapshot.every_steps, "keep an in-memory snapshot every N steps (0: off)");
  app.add_option("--snapshot_target", o.snapshot.targets, "an agent's snapshot service host:port (repeatable)");
  app.add_option("--resume_snapshot", resume_snapshot,
                 "STEP@HOST:PORT: with --resume, start from that agent's in-memory snapshot of this rank "
                 "when it verifies and is newer than the disk checkpoint");
  app.add_option("--snapshot_timeout_ms", o.snapshot.timeout_ms, "per snapshot transfer")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    stop_signal.Done();
    return app.exit(e) == 0 ? 0 : kp::worker::fault::kExitBadConfig;
  }
  kp::engine::InitProcessLogging("kp-train", o.world_size > 1 ? o.rank : -1);
  // Started by kp-agent: SIGTERM (a clean stop) when the agent dies, rather
  // than training on as an orphan beside the next generation.
  if (std::getenv("KP_JOB_ID") != nullptr) {
    if (absl::Status st = kp::worker::fault::SignalWhenParentDies(SIGTERM, parent_at_start); !st.ok()) {
      kp::engine::LogError(st.ToString());
    }
  }
  if (steps > 0) o.steps = steps;
  if (!resume_snapshot.empty()) {
    const size_t at = resume_snapshot.find('@');
    char* end = nullptr;
    const long long step = at == std::string::npos ? -1 : std::strtoll(resume_snapshot.c_str(), &end, 10);
    if (at == std::string::npos || end != resume_snapshot.c_str() + at || step < 0 || at + 1 == resume_snapshot.size()) {
      kp::engine::LogError("--resume_snapshot " + resume_snapshot + ": expected STEP@HOST:PORT");
      stop_signal.Done();
      return kp::worker::fault::kExitBadConfig;
    }
    o.snapshot.resume_step = step;
    o.snapshot.resume_address = resume_snapshot.substr(at + 1);
  }
  // Snapshots are keyed by the agent's job and generation; the agent's token
  // authenticates them.
  if (const char* job = std::getenv("KP_JOB_ID"); job != nullptr) o.snapshot.job_id = job;
  if (const char* gen = std::getenv("KP_GENERATION"); gen != nullptr) o.snapshot.generation = std::strtoll(gen, nullptr, 10);
  if (const char* token_file = std::getenv("KP_TOKEN_FILE"); token_file != nullptr && *token_file != '\0') {
    std::ifstream in(token_file);
    std::string token;
    in >> token;
    o.snapshot.token = token;
  }

  kp::engine::ParseOptions parse;
  parse.fp8_linear_available = true;  // kp-train links runtime/fp8's Linear
  auto config = kp::engine::LoadConfigFile(config_path, parse);
  if (!config.ok()) {
    kp::engine::LogError(config.status().ToString());
    stop_signal.Done();
    return kp::worker::fault::kExitBadConfig;
  }
  // The agent (runtime/agent/supervisor.cc) states the placement it chose in
  // the environment; it wins over the config's parallel section and data.
  auto env_int = [](const char* name, int64_t* out) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') *out = std::strtoll(v, nullptr, 10);
  };
  env_int("KP_DP", &config->parallel.dp);
  env_int("KP_CP", &config->parallel.cp);
  if (const char* data = std::getenv("KP_DATA_PATH"); data != nullptr && *data != '\0') {
    config->data.corpus = kp::engine::DataConfig::Corpus::kPath;
    config->data.path = data;
  }
  o.stop_flag = stop_signal.flag();
  auto result = kp::worker::RunTraining(*config, o);
  stop_signal.Done();
  if (!result.ok()) {
    const int code = kp::worker::fault::ExitCodeFor(result.status());
    if (code == kp::worker::fault::kExitOk) {
      kp::engine::LogInfo("stopped on request: " + result.status().ToString());
    } else {
      kp::engine::LogError("training failed: " + result.status().ToString());
    }
    return code;
  }
  kp::engine::LogInfo(absl::StrFormat("done: %d steps, final loss %.4f, %.0f tokens/s, %d skipped",
                                      result->next_step, result->final_loss,
                                      result->mean_tokens_per_s, result->skipped_steps));
  return 0;
}
