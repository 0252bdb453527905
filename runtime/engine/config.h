// The one place that reads a training run's configuration: model shape,
// training hyper-parameters, precision, parallel layout and data source, all
// from one YAML file. Every field is documented in configs/README.md. Unknown
// fields and bad values are errors that name the field and the file, so a
// typo never silently falls back to a default.
#ifndef KP_RUNTIME_ENGINE_CONFIG_H_
#define KP_RUNTIME_ENGINE_CONFIG_H_

#include <cstdint>
#include <string>

#include "runtime/common/status.h"

namespace kp::engine {

struct ModelConfig {
  int64_t vocab_size = 256;
  int64_t d_model = 128;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t n_kv_heads = 4;
  int64_t ffn_hidden = 512;
  int64_t max_seq_len = 1024;
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  bool tie_embeddings = false;
  // The fused CUDA kernels for RoPE and SwiGLU (runtime/engine/fused_ops.h)
  // on CUDA bf16; false takes the ATen composition everywhere.
  bool fused_kernels = true;

  int64_t head_dim() const { return d_model / n_heads; }
};

enum class ActivationCheckpointing { kNone, kSelective, kFull };
enum class NanPolicy { kSkip, kStop };

struct TrainingConfig {
  int64_t seq_len = 128;
  int64_t micro_batch = 8;
  int64_t grad_accum = 1;
  int64_t steps = 100;
  double lr = 3e-4;
  double min_lr = 3e-5;
  int64_t warmup_steps = 10;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  // 0 disables clipping
  uint64_t seed = 1234;
  ActivationCheckpointing activation_checkpointing = ActivationCheckpointing::kNone;
  int64_t loss_chunk_tokens = 8192;
  // Long sequences on one device (configs/README.md): block inputs kept in
  // pinned host memory (needs activation_checkpointing full), and the MLP
  // computed mlp_tile_tokens positions at a time (0: off).
  bool offload_checkpoints = false;
  int64_t mlp_tile_tokens = 0;
  NanPolicy nan_policy = NanPolicy::kSkip;
  int64_t log_every = 10;
  int64_t checkpoint_every = 0;  // 0: only at the end of the run
  int64_t keep_checkpoints = 2;
};

enum class Precision { kFp32, kBf16, kFp8 };

enum class CpMode { kAuto, kRing, kAllGather, kUlysses };

struct ParallelConfig {
  int64_t dp = 1;
  int64_t cp = 1;
  CpMode cp_mode = CpMode::kAuto;
};

// The built-in corpus (runtime/engine/data/markov_corpus.h, whose CorpusSpec
// these fields mirror): order-k Markov text with seeded transition tables,
// optionally mixed with key/value retrieval segments, so its entropy rate is
// known. Its vocabulary is num_symbols + num_keys + 4 (<= model.vocab_size).
struct BuiltinCorpusConfig {
  uint64_t seed = 1234;
  int64_t num_symbols = 32;
  int64_t order = 2;
  int64_t support = 6;
  double dirichlet_alpha = 0.5;
  double uniform_floor = 0.01;
  double text_stop_prob = 1.0 / 256;
  double retrieval_prob = 0.0;
  int64_t num_keys = 32;
  int64_t pairs = 8;
  int64_t queries = 8;
  double filler_stop_prob = 1.0 / 384;
  int64_t num_tokens = 4 << 20;  // generated once, cached under run_dir
  int64_t vocab_size() const { return num_symbols + num_keys + 4; }
};

struct DataConfig {
  enum class Corpus { kBuiltin, kPath };
  Corpus corpus = Corpus::kBuiltin;
  std::string path;  // a token file or a text file (byte-level) when corpus == kPath
  BuiltinCorpusConfig builtin;
};

// What a run does when a peer fails (docs/FAULT_TOLERANCE.md).
struct FaultConfig {
  // Survivors of a dead data-parallel peer re-form their communicator
  // in-process (no restart), split the same global batch among themselves and
  // redo the failed step from the state they hold. Needs parallel.cp == 1 and
  // precision other than fp8; otherwise the restart path.
  bool in_process_shrink = false;
  // How long survivors wait for each other to agree who is alive; 0: twice
  // the communicator timeout plus 5 s (it must exceed that timeout).
  int64_t shrink_window_ms = 0;
  // Fewer data-parallel ranks left than this: no shrink, the restart path.
  int64_t min_dp = 1;
};

struct Config {
  ModelConfig model;
  TrainingConfig training;
  Precision precision = Precision::kFp32;
  ParallelConfig parallel;
  DataConfig data;
  FaultConfig fault;
  // The optional `fp8:` section as YAML text (recipe, amax history, margin,
  // allow_fallback, autotune...), parsed by runtime/fp8 in the worker.
  std::string fp8_yaml;
  std::string source;  // the file (or label) it was parsed from
};

struct ParseOptions {
  // True when a Linear for "fp8" is registered (runtime/fp8/); without one
  // `precision: fp8` is rejected instead of silently training in bf16.
  bool fp8_linear_available = false;
};

// `source` names the text in error messages (normally the file path).
absl::StatusOr<Config> ParseConfig(const std::string& yaml_text, const std::string& source,
                                   const ParseOptions& options = {});
absl::StatusOr<Config> LoadConfigFile(const std::string& path, const ParseOptions& options = {});

// Cross-field checks (also run by ParseConfig); callers that edit a Config
// (e.g. --steps) run it again.
absl::Status ValidateConfig(const Config& config);

const char* PrecisionName(Precision p);
const char* ActivationCheckpointingName(ActivationCheckpointing a);

}  // namespace kp::engine

#endif  // KP_RUNTIME_ENGINE_CONFIG_H_
