#include "runtime/worker/run_training.h"

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <memory>
#include <utility>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/comm/factory.h"
#include "runtime/comm/shrink.h"
#include "runtime/comm/store.h"
#include "runtime/common/files.h"
#include "runtime/engine/checkpoint/checkpoint_manager.h"
#include "runtime/engine/checkpoint/rng_state.h"
#include "runtime/engine/data/markov_corpus.h"
#include "runtime/engine/data/sampler.h"
#include "runtime/engine/data/training_data.h"
#include "runtime/engine/device.h"
#include "runtime/engine/log.h"
#include "runtime/fp8/device_check.h"
#include "runtime/worker/fault/hang_guard.h"
#include "runtime/worker/fault/step_boundary_stop.h"
#include "runtime/worker/step_time/step_timer.h"
#include "runtime/worker/profile/step_profiler.h"
#include "runtime/worker/resume_check.h"
#include "runtime/snapshot/worker_snapshots.h"
#include "runtime/fp8/amax_sync.h"
#include "runtime/fp8/fp8_linear.h"
#include "runtime/fp8/metrics_sink.h"
#include "runtime/fp8/options_yaml.h"
#include "runtime/parallel/cp_engine_attention.h"
#include "runtime/parallel/data_parallel.h"
#include "runtime/parallel/mode_select.h"
#include "runtime/parallel/parity_check.h"
#include "runtime/comm/host_staged.h"
#include "runtime/comm/reduce_values.h"

namespace kp::worker {
namespace {

using engine::Config;

// The sampler (runtime/engine/data) as the loop's BatchSource.
class SamplerBatches final : public engine::BatchSource {
 public:
  SamplerBatches(std::unique_ptr<data::Sampler> sampler, BatchHook hook = nullptr)
      : sampler_(std::move(sampler)), hook_(std::move(hook)) {}
  absl::StatusOr<at::Tensor> Batch(int64_t step, int micro) override {
    if (hook_) {
      const data::SamplerOptions& o = sampler_->options();
      const int64_t share = o.global_batch / o.dp_world;
      const int64_t mb = share / o.grad_accum;
      hook_(step, micro, step * o.global_batch + o.dp_rank * share + micro * mb, mb);
    }
    return sampler_->Batch(step, micro);
  }
  // After an in-process shrink: this rank's new share of the same stream.
  void Replace(std::unique_ptr<data::Sampler> sampler) { sampler_ = std::move(sampler); }

 private:
  std::unique_ptr<data::Sampler> sampler_;
  BatchHook hook_;
};

// parallel::ShrinkRecovery (fault.in_process_shrink) as the loop's DpRecovery.
class ShrinkDpRecovery final : public engine::DpRecovery {
 public:
  ShrinkDpRecovery(comm::ReformableCommunicator* comm, parallel::ShrinkRecoveryOptions options)
      : impl_(comm, std::move(options)) {}
  absl::StatusOr<engine::DpLayout> Recover(int64_t step, const absl::Status& error) override {
    KP_ASSIGN_OR_RETURN(parallel::DpShare s, impl_.Recover(step, error));
    return engine::DpLayout{s.dp_rank, s.dp_world, s.micro_batch, s.grad_accum};
  }

 private:
  parallel::ShrinkRecovery impl_;
};

// The data-parallel GradientReducer (runtime/parallel) as the loop's sync.
// With FP8, the layers' amaxes are max-reduced beside the gradients so every
// rank derives the same scales (otherwise ranks drift apart in precision).
class ReducerSync final : public engine::GradientSync {
 public:
  ReducerSync(std::unique_ptr<parallel::GradientReducer> r, comm::Communicator* comm,
              std::shared_ptr<fp8::Fp8Session> fp8)
      : reducer_(std::move(r)), comm_(comm), fp8_(std::move(fp8)) {}
  void PrepareForBackward(bool last) override {
    last_ = last;
    reducer_->PrepareForBackward(last);
  }
  absl::Status Finish() override {
    KP_RETURN_IF_ERROR(reducer_->Finish());
    if (fp8_ && last_) return fp8::AllReduceAmax(*fp8_, *comm_);
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<parallel::GradientReducer> reducer_;
  comm::Communicator* comm_;
  std::shared_ptr<fp8::Fp8Session> fp8_;
  bool last_ = false;
};

// Rank 0 saves model and optimizer (replicas are identical after the
// all-reduce) through the async, atomic checkpoint manager. A save that
// failed (after the manager's retries) is logged and training goes on: the
// previous complete checkpoint stays the newest, and the next save is the
// next try.
class ManagerCheckpoints final : public engine::CheckpointSink {
 public:
  ManagerCheckpoints(ckpt::CheckpointOptions options, int64_t global_batch, std::string config_hash,
                     std::shared_ptr<fp8::Fp8Session> fp8, engine::TrainingConfig training)
      : manager_(std::move(options)), global_batch_(global_batch),
        config_hash_(std::move(config_hash)), fp8_(std::move(fp8)), training_(std::move(training)) {}
  absl::Status Save(int64_t next_step, engine::Transformer& model,
                    engine::Optimizer& optimizer) override {
    if (leader_ != nullptr && leader_->rank() != 0) return absl::OkStatus();
    ckpt::TensorMap params;
    for (const auto& p : model.named_parameters()) params[p.key()] = p.value().detach();
    ckpt::TensorMap optim;
    for (auto& [k, v] : optimizer.StateDict()) optim[k] = v;
    ckpt::CheckpointState state;
    // What the resumed run must find again (resume_check.h).
    ResumePoint point;
    point.step = next_step;
    point.data_position = next_step * global_batch_;
    point.learning_rate = engine::LearningRate(training_, next_step);
    point.cpu_rng = ckpt::CaptureCpuRngState();
    point.optimizer_step = OptimizerStep(optimizer.StateDict());
    RecordResumePoint(point, &state);
    state.config_hash = config_hash_;
    state.part_names = {"model", "optimizer"};
    std::map<std::string, ckpt::TensorMap> parts{{"model", params}, {"optimizer", optim}};
    if (fp8_) {
      // FP8 scaling state (amax histories) and the per-layer choices, so a
      // resumed run casts exactly as the uninterrupted one would.
      auto fp8_state = fp8_->StateDict();
      parts["fp8"] = ckpt::TensorMap(fp8_state.begin(), fp8_state.end());
      state.part_names.push_back("fp8");
      state.extra["fp8_choices"] = fp8_->EncodeChoices();
    }
    if (absl::Status previous = manager_.Wait(); !previous.ok()) {
      engine::LogError("checkpoint failed, training goes on (the previous complete checkpoint stays the "
                       "newest; saving step " + std::to_string(next_step) + " now): " + previous.ToString());
    }
    return manager_.SaveAsync(state, parts);
  }
  absl::Status Wait() { return manager_.Wait(); }
  // With in-process shrink every rank holds a manager and only the current
  // rank 0 of `leader` saves (rank 0 may be the one that died).
  void set_leader(comm::Communicator* leader) { leader_ = leader; }

 private:
  ckpt::CheckpointManager manager_;
  comm::Communicator* leader_ = nullptr;
  int64_t global_batch_;
  std::string config_hash_;
  std::shared_ptr<fp8::Fp8Session> fp8_;
  engine::TrainingConfig training_;
};

std::string CpModeName(engine::CpMode m) {
  switch (m) {
    case engine::CpMode::kAuto: return "auto";
    case engine::CpMode::kRing: return "ring";
    case engine::CpMode::kAllGather: return "allgather";
    case engine::CpMode::kUlysses: return "ulysses";
  }
  return "auto";
}

// What must match for a checkpoint to be loadable into this model.
std::string ModelHash(const Config& c) {
  const auto& m = c.model;
  return absl::StrCat("v", m.vocab_size, "_d", m.d_model, "_l", m.n_layers, "_h", m.n_heads, "_kv",
                      m.n_kv_heads, "_f", m.ffn_hidden, "_tie", m.tie_embeddings);
}

data::CorpusSpec SpecOf(const engine::BuiltinCorpusConfig& b) {
  data::CorpusSpec s;
  s.seed = b.seed;
  s.num_symbols = static_cast<int>(b.num_symbols);
  s.order = static_cast<int>(b.order);
  s.support = static_cast<int>(b.support);
  s.dirichlet_alpha = b.dirichlet_alpha;
  s.uniform_floor = b.uniform_floor;
  s.text_stop_prob = b.text_stop_prob;
  s.retrieval_prob = b.retrieval_prob;
  s.num_keys = static_cast<int>(b.num_keys);
  s.pairs = static_cast<int>(b.pairs);
  s.queries = static_cast<int>(b.queries);
  s.filler_stop_prob = b.filler_stop_prob;
  return s;
}

// Copies a loaded checkpoint into the model and optimizer; errors name the
// tensor and both shapes.
absl::Status Restore(const ckpt::LoadedCheckpoint& loaded, engine::Transformer& model,
                     engine::Optimizer& optimizer) {
  auto mit = loaded.parts.find("model");
  if (mit == loaded.parts.end()) {
    return absl::DataLossError(absl::StrCat(loaded.dir, ": no model part"));
  }
  at::NoGradGuard no_grad;
  for (auto& p : model.named_parameters()) {
    auto t = mit->second.find(p.key());
    if (t == mit->second.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(loaded.dir, ": checkpoint has no tensor ", p.key()));
    }
    if (!t->second.sizes().equals(p.value().sizes())) {
      return absl::InvalidArgumentError(absl::StrCat(
          loaded.dir, ": ", p.key(), " has shape ", c10::str(t->second.sizes()),
          " in the checkpoint but ", c10::str(p.value().sizes()), " in the model (config changed?)"));
    }
    p.value().copy_(t->second);
  }
  auto oit = loaded.parts.find("optimizer");
  if (oit != loaded.parts.end()) {
    std::map<std::string, at::Tensor> state(oit->second.begin(), oit->second.end());
    KP_RETURN_IF_ERROR(optimizer.LoadStateDict(state));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<engine::TrainResult> RunTraining(const Config& input, const RunOptions& options) {
  Config config = input;
  if (options.steps) {
    config.training.steps = *options.steps;
    if (config.training.warmup_steps > config.training.steps) {
      config.training.warmup_steps = config.training.steps;
    }
  }
  KP_RETURN_IF_ERROR(engine::ValidateConfig(config));
  const engine::TrainingConfig& t = config.training;
  if (options.run_dir.empty()) return absl::InvalidArgumentError("run_dir is required");
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", options.rank, " is outside world_size ",
                                                   options.world_size));
  }
  const int cp = static_cast<int>(config.parallel.cp);
  const int dp = static_cast<int>(config.parallel.dp);
  if (dp * cp != options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        config.source, ": parallel.dp * parallel.cp is ", dp, " * ", cp, " = ", dp * cp,
        " but world_size is ", options.world_size));
  }
  // Rank layout: the cp ranks of one sequence are consecutive (one node's
  // fast links); rank = dp_rank * cp + cp_rank.
  const int dp_rank = options.rank / cp;
  const int cp_rank = options.rank % cp;
  KP_RETURN_IF_ERROR(MakeDirs(options.run_dir));
  if (options.threads > 0 && at::get_num_threads() != options.threads) {
    at::set_num_threads(options.threads);
  }

  // Device and precision: fp32 master weights everywhere; bf16 (and fp8)
  // compute on GPU through the Linear seam's per-use casts.
  KP_ASSIGN_OR_RETURN(c10::Device device, engine::ResolveDevice(options.device, options.local_rank));
  const bool low_precision = config.precision != engine::Precision::kFp32;
  // Resume point, found first: FP8 restores its per-layer choices from it
  // before the model is built.
  // The newest checkpoint that loads: a corrupt one is skipped for the one
  // before it; if every complete one is corrupt, a restart cannot help
  // (INVALID_ARGUMENT: exit 2).
  std::optional<std::string> resume_dir;
  std::optional<ckpt::LoadedCheckpoint> resume_loaded;
  ckpt::CheckpointState resume_state;
  if (options.resume) {
    auto latest = ckpt::CheckpointManager::LoadNewestGood(options.run_dir);
    if (latest.ok()) {
      resume_dir = latest->dir;
      resume_state = latest->state;
      resume_loaded = std::move(*latest);
    } else if (absl::IsNotFound(latest.status())) {
      engine::LogInfo(absl::StrCat("--resume: no complete checkpoint in ", options.run_dir,
                                   "; starting at step 0"));
    } else if (absl::IsDataLoss(latest.status())) {
      return absl::InvalidArgumentError(std::string(latest.status().message()));
    } else {
      return latest.status();
    }
  }
  // The in-memory snapshot the coordinator named (runtime/snapshot/), used
  // instead of the disk checkpoint when it verifies and is newer; any
  // failure falls back to the disk checkpoint, saying why.
  std::optional<ckpt::LoadedCheckpoint> from_snapshot;
  const bool snapshot_named = options.resume && !options.snapshot.resume_address.empty();
  if (snapshot_named) {
    const int64_t disk_step = resume_loaded ? resume_loaded->state.step : 0;
    auto fetched = snapshot::FetchSnapshot(options.snapshot, options.rank, options.world_size, ModelHash(config));
    if (!fetched.ok()) {
      engine::LogWarning("not resuming from the in-memory snapshot: " + fetched.status().ToString());
    } else if (fetched->state.step <= disk_step) {
      engine::LogInfo(absl::StrCat("the disk checkpoint (step ", disk_step, ") is as new as the in-memory snapshot (step ",
                                   fetched->state.step, "): resuming from disk"));
    } else {
      from_snapshot = std::move(*fetched);
      resume_state = from_snapshot->state;  // FP8 choices, as a disk checkpoint's would be
    }
  }

  engine::LinearRegistry registry =
      options.linear_registry ? *options.linear_registry : engine::DefaultLinearRegistry();
  std::shared_ptr<fp8::Fp8Session> fp8_session;
  if (config.precision == engine::Precision::kFp8 && !registry.Has("fp8")) {
    fp8::Fp8Options fo;
    bool autotune = true;
    if (!config.fp8_yaml.empty()) {
      YAML::Node section;
      try {
        section = YAML::Load(config.fp8_yaml);
      } catch (const YAML::Exception& e) {
        return absl::InvalidArgumentError(config.source + ": fp8: " + e.what());
      }
      KP_ASSIGN_OR_RETURN(fp8::ParsedFp8Config parsed, fp8::ParseFp8Config(section, config.source));
      fo = parsed.options;
      autotune = parsed.autotune;
    }
    // M of every projection GEMM; without it the per-layer BF16/FP8 timing
    // at start-up is skipped and every eligible layer runs FP8.
    if (autotune) fo.tokens = t.micro_batch * t.seq_len / cp;
    auto choices = resume_state.extra.find("fp8_choices");
    if (choices != resume_state.extra.end()) {
      KP_ASSIGN_OR_RETURN(fo.forced_choices, fp8::Fp8Session::DecodeChoices(choices->second));
    }
    const fp8::Fp8DeviceInfo info =
        device.is_cuda() ? fp8::QueryCudaDevice(device.index()) : fp8::CpuDevice();
    auto session = fp8::Fp8Session::Create(fo, info);
    // FP8 asked of a device without it is permanent: exit 2, no restart.
    if (absl::IsFailedPrecondition(session.status())) {
      return absl::InvalidArgumentError(session.status().message());
    }
    KP_ASSIGN_OR_RETURN(fp8_session, std::move(session));
    fp8::RegisterFp8Linear(registry, fp8_session);
  }
  KP_ASSIGN_OR_RETURN(auto factory, registry.Make(engine::PrecisionName(config.precision)));
  engine::LinearContext lctx;
  lctx.device = device;
  lctx.param_dtype = at::kFloat;
  lctx.compute_dtype = low_precision ? at::kBFloat16 : at::kFloat;
  // Every rank draws the same initial weights from the seed (and rank 0's
  // are broadcast anyway under data parallelism).
  lctx.generator = at::make_generator<at::CPUGeneratorImpl>(t.seed);
  // The ranks' group: all dp * cp ranks average gradients together (cp ranks
  // hold partial gradients of the same replica); the cp ranks of one
  // sequence also form a sub-group for the attention.
  std::unique_ptr<comm::FileStore> store;
  std::unique_ptr<comm::Communicator> owned_comm;
  comm::Communicator* world_comm = nullptr;
  comm::ReformableCommunicator* shrinkable = nullptr;  // fault.in_process_shrink
  if (options.world_size > 1) {
    comm::Communicator* comm = options.communicator;
    if (comm == nullptr) {
      if (options.rendezvous.empty()) {
        return absl::InvalidArgumentError("world_size > 1 needs --rendezvous (a shared directory)");
      }
      KP_RETURN_IF_ERROR(MakeDirs(options.rendezvous));
      store = std::make_unique<comm::FileStore>(options.rendezvous);
      comm::CommOptions co;
      co.cuda_device = device.is_cuda() ? device.index() : -1;
      co.shrinkable = config.fault.in_process_shrink;
      if (options.comm_timeout_ms > 0) co.timeout = std::chrono::milliseconds(options.comm_timeout_ms);
      const std::string backend =
          !options.comm_backend.empty() ? options.comm_backend : (device.is_cuda() ? "nccl" : "gloo");
      if (backend != "nccl" && backend != "gloo") {
        return absl::InvalidArgumentError(absl::StrCat("--comm_backend: unknown backend '", backend,
                                                       "' (nccl or gloo)"));
      }
      if (backend == "nccl" && !device.is_cuda()) {
        return absl::InvalidArgumentError("--comm_backend nccl needs --device cuda");
      }
      if (backend == "gloo") co.cuda_device = -1;
      KP_ASSIGN_OR_RETURN(owned_comm, comm::CreateCommunicator(backend, options.rank,
                                                               options.world_size, *store, co));
      // Gloo takes host tensors: a CUDA run stages its transfers (several
      // ranks on one GPU; NCCL refuses that).
      if (backend == "gloo" && device.is_cuda()) owned_comm = comm::MakeHostStaged(std::move(owned_comm));
      if (config.fault.in_process_shrink) {
        // Everything below holds this pointer, which survives a re-formation.
        auto reformable = std::make_unique<comm::ReformableCommunicator>(std::move(owned_comm),
                                                                         store.get(), "shrink");
        shrinkable = reformable.get();
        owned_comm = std::move(reformable);
      }
      comm = owned_comm.get();
    }
    world_comm = comm;
  }
  if (snapshot_named) {
    // All ranks resume from snapshots, or all from disk.
    KP_ASSIGN_OR_RETURN(const bool every_rank, snapshot::AllRanksAgree(world_comm, from_snapshot.has_value(), device));
    if (from_snapshot && !every_rank) {
      engine::LogWarning("another rank cannot use its in-memory snapshot: every rank resumes from the disk checkpoint");
      from_snapshot.reset();
    }
    if (from_snapshot) {
      resume_dir = from_snapshot->dir;  // "snapshot@<agent>"
      resume_loaded = std::move(from_snapshot);
    }
  }
  // The watchdog aborts a collective stuck past its timeout (the run then
  // ends with DEADLINE_EXCEEDED -> exit 75); if the process cannot return,
  // the guard flushes the logs and exits 75 itself.
  std::unique_ptr<fault::HangGuard> hang_guard;
  if (owned_comm) hang_guard = std::make_unique<fault::HangGuard>(owned_comm.get());
  // FP8 layers are chosen at start-up by timing; with several ranks every
  // rank must choose alike, so the timings are reduced across the world.
  if (fp8_session && world_comm != nullptr && world_comm->size() > 1) {
    fp8_session->SetTimingAgreement([world_comm, device](std::vector<double>& values) {
      return comm::AllReduceValues(*world_comm, values, comm::ReduceOp::kMax, device);
    });
  }
  std::unique_ptr<comm::Communicator> cp_comm;
  std::shared_ptr<engine::Attention> attention = engine::MakeLocalAttention();
  if (cp > 1) {
    KP_ASSIGN_OR_RETURN(cp_comm, world_comm->Split(/*color=*/dp_rank, /*key=*/cp_rank));
    parallel::CpOptions cpo;
    KP_ASSIGN_OR_RETURN(cpo.mode, parallel::ParseCpMode(CpModeName(config.parallel.cp_mode)));
    attention = parallel::MakeContextParallelAttention(cp_comm.get(), cpo);
    // Before any training: one attention layer at the model's head shapes,
    // context-parallel and on one rank over the same small input; a
    // mismatch refuses the job naming the tensor and error (parity_check.h).
    // Under `auto` every mode the rule may pick is checked, since the pick
    // depends on shapes the check does not share.
    std::vector<parallel::CpMode> modes = {cpo.mode};
    if (cpo.mode == parallel::CpMode::kAuto) {
      modes = {parallel::CpMode::kRing, parallel::CpMode::kAllGather};
      if (config.model.n_heads % cp == 0) modes.push_back(parallel::CpMode::kUlysses);
    }
    for (parallel::CpMode mode : modes) {
      parallel::ParityConfig pc;
      pc.options = cpo;
      pc.options.mode = mode;
      if (options.break_cp_merge_for_test) pc.options.merge = parallel::MergeMode::kBrokenForTesting;
      pc.heads = config.model.n_heads;
      pc.kv_heads = config.model.n_kv_heads;
      pc.head_dim = config.model.head_dim();
      pc.dtype = lctx.compute_dtype;
      pc.device = device;
      absl::Status parity = parallel::CheckCpParity(*cp_comm, pc);
      // A mismatch is permanent (same code, same shapes): exit 2, no restart.
      if (absl::IsFailedPrecondition(parity)) return absl::InvalidArgumentError(parity.message());
      KP_RETURN_IF_ERROR(parity);
    }
  }
  auto model = std::make_shared<engine::Transformer>(config.model, *factory, lctx,
                                                     attention, t.activation_checkpointing);
  engine::Optimizer optimizer(*model, t);
  engine::LogInfo(absl::StrFormat(
      "model: %d parameters (%d without the embedding), %s on %s, activation checkpointing %s",
      model->NumParameters(true), model->NumParameters(false),
      engine::PrecisionName(config.precision), device.str(),
      engine::ActivationCheckpointingName(t.activation_checkpointing)));

  // Data: the built-in corpus (generated once into run_dir/corpus) or a file.
  std::shared_ptr<const data::TokenSource> source;
  double entropy_rate = 0;
  if (config.data.corpus == engine::DataConfig::Corpus::kBuiltin) {
    data::CorpusSpec spec = SpecOf(config.data.builtin);
    KP_ASSIGN_OR_RETURN(auto corpus, data::MarkovCorpus::Create(spec));
    entropy_rate = corpus->entropy_rate();
    KP_ASSIGN_OR_RETURN(source, data::OpenBuiltinCorpus(spec, config.data.builtin.num_tokens,
                                                        options.run_dir + "/corpus"));
    engine::LogInfo(absl::StrFormat("data: built-in corpus, %d tokens, entropy rate %.4f nats/token",
                                    source->size(), entropy_rate));
  } else {
    KP_ASSIGN_OR_RETURN(source, data::OpenTrainingData(config.data.path));
    engine::LogInfo(absl::StrFormat("data: %s (%d tokens)", source->name(), source->size()));
  }
  if (source->vocab_size() > static_cast<uint32_t>(config.model.vocab_size)) {
    return absl::InvalidArgumentError(absl::StrCat(
        config.source, ": model.vocab_size is ", config.model.vocab_size, " but the data (",
        source->name(), ") has vocabulary ", source->vocab_size()));
  }
  data::SamplerOptions so;
  so.seed = t.seed;
  so.seq_len = t.seq_len;
  so.global_batch = t.micro_batch * t.grad_accum * dp;
  so.dp_rank = dp_rank;  // the cp ranks of one replica read the same samples
  so.dp_world = dp;
  so.grad_accum = static_cast<int>(t.grad_accum);
  KP_ASSIGN_OR_RETURN(auto sampler, data::Sampler::Create(source, so));
  SamplerBatches batches(std::move(sampler), options.on_batch);

  // Resume: load the checkpoint found above into model, optimizer and FP8.
  int64_t start_step = 0;
  if (resume_dir) {
    const ckpt::LoadedCheckpoint& loaded = *resume_loaded;
    if (!loaded.state.config_hash.empty() && loaded.state.config_hash != ModelHash(config)) {
      return absl::InvalidArgumentError(absl::StrCat(*resume_dir, ": saved for model ",
                                                     loaded.state.config_hash, ", config has ",
                                                     ModelHash(config)));
    }
    KP_RETURN_IF_ERROR(Restore(loaded, *model, optimizer));
    auto fp8_part = loaded.parts.find("fp8");
    if (fp8_session && fp8_part != loaded.parts.end()) {
      KP_RETURN_IF_ERROR(fp8_session->LoadStateDict(
          std::map<std::string, at::Tensor>(fp8_part->second.begin(), fp8_part->second.end())));
    }
    start_step = loaded.state.step;
    if (auto rng = loaded.state.rng.find("cpu"); rng != loaded.state.rng.end()) {
      KP_RETURN_IF_ERROR(ckpt::RestoreCpuRngState(rng->second));
    }
    // Validated resume: what this run derives now against what was recorded.
    ResumePoint restored;
    restored.step = start_step;
    restored.data_position = start_step * so.global_batch;  // Sampler::DataPosition
    restored.learning_rate = engine::LearningRate(t, start_step);
    restored.cpu_rng = ckpt::CaptureCpuRngState();
    restored.optimizer_step = OptimizerStep(optimizer.StateDict());
    if (options.allow_schedule_change) {
      engine::LogInfo("--allow_schedule_change: the resume check skips the learning rate");
    }
    KP_RETURN_IF_ERROR(CheckResume(*resume_dir, loaded.state, restored, !options.allow_schedule_change));
    resume_loaded.reset();  // the tensors are in the model and optimizer now
    engine::LogInfo(absl::StrFormat("resumed from %s at step %d", *resume_dir, start_step));
  }

  std::unique_ptr<engine::GradientSync> sync = std::make_unique<engine::GradientSync>();
  if (world_comm != nullptr) {
    KP_RETURN_IF_ERROR(CheckSameResumeStep(*world_comm, start_step, device));
    auto reducer = std::make_unique<parallel::GradientReducer>(world_comm, optimizer.parameters());
    if (start_step == 0) KP_RETURN_IF_ERROR(reducer->BroadcastParameters(0));
    sync = std::make_unique<ReducerSync>(std::move(reducer), world_comm, fp8_session);
  }

  std::unique_ptr<ManagerCheckpoints> checkpoints;
  if (options.rank == 0 || shrinkable != nullptr) {
    ckpt::CheckpointOptions co;
    co.run_dir = options.run_dir;
    co.keep_last = static_cast<int>(t.keep_checkpoints);
    checkpoints = std::make_unique<ManagerCheckpoints>(co, so.global_batch, ModelHash(config),
                                                       fp8_session, t);
  }
  if (checkpoints && shrinkable != nullptr) checkpoints->set_leader(shrinkable);
  // In-memory snapshots every k steps on every rank: a checkpoint sink whose
  // manager hands its host copy to the sender instead of writing.
  std::unique_ptr<snapshot::SnapshotSender> snapshot_sender;
  std::unique_ptr<ManagerCheckpoints> snapshot_sink;
  if (options.snapshot.every_steps > 0 && !options.snapshot.targets.empty()) {
    snapshot_sender = std::make_unique<snapshot::SnapshotSender>(
        options.snapshot, options.rank, options.world_size,
        [&](int64_t next_step) { return snapshot_sink->Save(next_step, *model, optimizer); });
    ckpt::CheckpointOptions so_snap;
    so_snap.run_dir = options.run_dir;
    so_snap.capture = [sender = snapshot_sender.get()](const ckpt::CheckpointState& state,
                                                       std::map<std::string, ckpt::TensorMap> parts) {
      sender->Give(state, std::move(parts));
      return absl::OkStatus();
    };
    snapshot_sink = std::make_unique<ManagerCheckpoints>(so_snap, so.global_batch, ModelHash(config), fp8_session, t);
  }
  std::string metrics_path = options.metrics_jsonl;
  if (metrics_path.empty() && options.rank == 0) metrics_path = options.run_dir + "/metrics.jsonl";
  if (options.rank != 0) metrics_path.clear();
  KP_ASSIGN_OR_RETURN(auto metrics,
                      engine::MetricsLogger::Create(metrics_path, t.log_every, t.steps));
  // FP8: each layer's amax, scale and underflows join the logged steps'
  // metrics (rank 0, which writes them; every rank's scales agree).
  engine::MetricsSink* metrics_sink = metrics.get();
  std::unique_ptr<fp8::Fp8MetricsSink> fp8_metrics;
  if (fp8_session && options.rank == 0) {
    fp8_metrics = std::make_unique<fp8::Fp8MetricsSink>(metrics.get(), fp8_session, t.log_every, t.steps);
    metrics_sink = fp8_metrics.get();
  }

  engine::TrainLoopOptions lo;
  lo.start_step = start_step;
  lo.end_step = options.stop_after_steps ? std::min(t.steps, *options.stop_after_steps) : t.steps;
  lo.device = device;
  lo.dp_world = dp;
  lo.cp_rank = cp_rank;
  lo.cp_size = cp;
  lo.peak_flops = engine::PeakFlops(device, low_precision);
  if (world_comm != nullptr && world_comm->size() > 1) {
    lo.mean_loss_across_ranks = [world_comm, device](double loss) -> absl::StatusOr<double> {
      std::vector<double> sum = {loss};
      KP_RETURN_IF_ERROR(comm::AllReduceValues(*world_comm, sum, comm::ReduceOp::kSum, device));
      return sum[0] / world_comm->size();
    };
  }
  engine::ResetPeakMemory(device);
  if (start_step >= lo.end_step) {
    engine::TrainResult done;
    done.next_step = start_step;
    done.entropy_rate = entropy_rate;
    return done;
  }
  // Every rank's own compute time per step, beside its metrics file, for the
  // coordinator's straggler detector (runtime/worker/step_time/).
  step_time::StepTimerOptions sto;
  if (!options.metrics_jsonl.empty()) sto.path = step_time::StepTimePath(options.metrics_jsonl);
  sto.rank = options.rank;
  sto.fence = step_time::CurrentStreamFence(device);  // CUDA: wait for the compute stream only
  KP_ASSIGN_OR_RETURN(sto.slow_down,
                      step_time::SlowDownFor(std::getenv(step_time::kSlowRankEnv), options.rank));
  KP_ASSIGN_OR_RETURN(auto step_timer, step_time::StepTimer::Create(&batches, sync.get(), sto));
  // A stop request (SIGTERM) ends the run at a step boundary that every rank
  // agrees on, after a checkpoint of the state before that step.
  std::unique_ptr<fault::StopAtStepBoundary> stoppable;
  engine::BatchSource* data = step_timer->batches();
  if (options.stop_flag != nullptr) {
    auto save_before = [&](int64_t step) -> absl::Status {
      if (!checkpoints) return absl::OkStatus();
      KP_RETURN_IF_ERROR(checkpoints->Save(step, *model, optimizer));
      return checkpoints->Wait();
    };
    stoppable = std::make_unique<fault::StopAtStepBoundary>(data, options.stop_flag, world_comm,
                                                            start_step, save_before);
    data = stoppable.get();
  }
  std::unique_ptr<profile::ProfiledBatches> profiled;
  if (!options.profile_steps.empty()) {
    KP_ASSIGN_OR_RETURN(const profile::StepWindow window, profile::ParseStepWindow(options.profile_steps));
    const std::string trace = options.profile_trace.empty()
                                  ? options.run_dir + "/profile_rank" + std::to_string(options.rank) + ".json"
                                  : options.profile_trace;
    profiled = std::make_unique<profile::ProfiledBatches>(
        data, window, profile::MakeKinetoRecorder(device.is_cuda()), trace);
    data = profiled.get();
  }
  // fault.in_process_shrink: when a data-parallel peer dies, the survivors
  // re-form the group in place, take their share of the same global batch
  // and redo the step (docs/FAULT_TOLERANCE.md).
  std::unique_ptr<ShrinkDpRecovery> recovery;
  if (shrinkable != nullptr) {
    parallel::ShrinkRecoveryOptions ro;
    ro.global_batch = so.global_batch;
    ro.micro_batch = t.micro_batch;
    ro.min_dp = static_cast<int>(config.fault.min_dp);
    ro.agree.min_survivors = ro.min_dp;
    ro.agree.window = config.fault.shrink_window_ms > 0
                          ? std::chrono::milliseconds(config.fault.shrink_window_ms)
                          : 2 * shrinkable->timeout() + std::chrono::milliseconds(5000);
    ro.params = optimizer.parameters();
    // The guard would end the process 10 s after a watchdog abort, in the
    // middle of the agreement; a fresh one watches the new group.
    ro.before_reform = [&] { hang_guard.reset(); };
    ro.after_reform = [&](const parallel::DpShare& share) -> absl::Status {
      data::SamplerOptions resharded = so;
      resharded.dp_rank = share.dp_rank;
      resharded.dp_world = share.dp_world;
      resharded.grad_accum = static_cast<int>(share.grad_accum);
      KP_ASSIGN_OR_RETURN(auto s, data::Sampler::Create(source, resharded));
      batches.Replace(std::move(s));
      hang_guard = std::make_unique<fault::HangGuard>(owned_comm.get());
      return absl::OkStatus();
    };
    recovery = std::make_unique<ShrinkDpRecovery>(shrinkable, std::move(ro));
    lo.recovery = recovery.get();
  }
  std::unique_ptr<snapshot::SnapshotEveryK> snapshot_hook;
  if (snapshot_sender) {
    snapshot_hook = std::make_unique<snapshot::SnapshotEveryK>(data, options.snapshot.every_steps, start_step,
                                                               snapshot_sender.get());
    data = snapshot_hook.get();
  }
  auto result = engine::TrainLoop(config, *model, optimizer, *data, *step_timer->sync(), checkpoints.get(),
                                  *metrics_sink, lo);
  if (profiled) KP_RETURN_IF_ERROR(profiled->Finish());
  if (checkpoints) {
    absl::Status saved = checkpoints->Wait();
    if (result.ok() && !saved.ok()) return saved;
  }
  if (!result.ok()) return result.status();
  result->entropy_rate = entropy_rate;
  if (entropy_rate > 0) {
    engine::LogInfo(absl::StrFormat("final loss %.4f nats/token = %.3f x the corpus entropy rate %.4f",
                                    result->final_loss, result->final_loss / entropy_rate,
                                    entropy_rate));
  }
  return result;
}

}  // namespace kp::worker
