#include "runtime/engine/config.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/common/files.h"

namespace kp::engine {
namespace {

// Reads one mapping of the YAML file and remembers which keys were consumed,
// so anything left over is reported as an unknown field.
class Section {
 public:
  Section(const YAML::Node& node, std::string path, const std::string& source)
      : node_(node), path_(std::move(path)), source_(source) {}

  absl::Status CheckIsMap() const {
    if (!node_ || node_.IsNull()) return absl::OkStatus();
    if (!node_.IsMap()) return Error(path_, "expected a mapping");
    return absl::OkStatus();
  }

  bool Has(const std::string& key) const { return node_ && node_.IsMap() && node_[key]; }

  // The subtree as YAML text, for a section another library validates.
  std::string Raw(const std::string& key) {
    seen_.insert(key);
    return Has(key) ? YAML::Dump(node_[key]) : std::string();
  }

  Section Sub(const std::string& key) {
    seen_.insert(key);
    return Section(Has(key) ? node_[key] : YAML::Node(), Field(key), source_);
  }

  absl::Status Int(const std::string& key, int64_t* out, int64_t min_value,
                   int64_t max_value = INT64_MAX) {
    seen_.insert(key);
    if (!Has(key)) return absl::OkStatus();
    const YAML::Node& n = node_[key];
    int64_t v = 0;
    if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v)) {
      return Error(Field(key), absl::StrCat("expected an integer, got '", Text(n), "'"));
    }
    if (v < min_value || v > max_value) {
      return Error(Field(key), absl::StrCat("must be in [", min_value, ", ", max_value,
                                            "], got ", v));
    }
    *out = v;
    return absl::OkStatus();
  }

  absl::Status Uint(const std::string& key, uint64_t* out) {
    int64_t v = static_cast<int64_t>(*out);
    KP_RETURN_IF_ERROR(Int(key, &v, 0));
    *out = static_cast<uint64_t>(v);
    return absl::OkStatus();
  }

  absl::Status Double(const std::string& key, double* out, double min_value, double max_value,
                      bool min_exclusive = false) {
    seen_.insert(key);
    if (!Has(key)) return absl::OkStatus();
    const YAML::Node& n = node_[key];
    double v = 0;
    if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v)) {
      return Error(Field(key), absl::StrCat("expected a finite number, got '", Text(n), "'"));
    }
    if (v < min_value || v > max_value || (min_exclusive && v == min_value)) {
      return Error(Field(key), absl::StrCat("must be in ", min_exclusive ? "(" : "[", min_value,
                                            ", ", max_value, "], got ", v));
    }
    *out = v;
    return absl::OkStatus();
  }

  absl::Status Bool(const std::string& key, bool* out) {
    seen_.insert(key);
    if (!Has(key)) return absl::OkStatus();
    const YAML::Node& n = node_[key];
    bool v = false;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) {
      return Error(Field(key), absl::StrCat("expected true or false, got '", Text(n), "'"));
    }
    *out = v;
    return absl::OkStatus();
  }

  absl::Status String(const std::string& key, std::string* out) {
    seen_.insert(key);
    if (!Has(key)) return absl::OkStatus();
    const YAML::Node& n = node_[key];
    if (!n.IsScalar()) return Error(Field(key), "expected a string");
    *out = n.Scalar();
    return absl::OkStatus();
  }

  template <typename E>
  absl::Status Enum(const std::string& key, E* out, const std::map<std::string, E>& choices) {
    std::string s;
    const bool present = Has(key);
    KP_RETURN_IF_ERROR(String(key, &s));
    if (!present) return absl::OkStatus();
    auto it = choices.find(s);
    if (it == choices.end()) {
      std::vector<std::string> names;
      for (const auto& [name, value] : choices) names.push_back(name);
      return Error(Field(key), absl::StrCat("must be one of ", absl::StrJoin(names, "|"),
                                            ", got '", s, "'"));
    }
    *out = it->second;
    return absl::OkStatus();
  }

  // Any key not consumed by the calls above is a typo or an unsupported field.
  absl::Status CheckNoUnknown() const {
    if (!node_ || !node_.IsMap()) return absl::OkStatus();
    for (const auto& kv : node_) {
      const std::string key = kv.first.as<std::string>();
      if (!seen_.count(key)) {
        return absl::InvalidArgumentError(absl::StrCat(
            source_, ":", kv.first.Mark().line + 1, ": unknown field '", Field(key), "'"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Error(const std::string& field, const std::string& what) const {
    int line = -1;
    const std::string key = field.substr(field.rfind('.') + 1);  // npos + 1 == 0
    if (node_ && node_.IsMap() && node_[key]) line = node_[key].Mark().line + 1;
    return absl::InvalidArgumentError(
        absl::StrCat(source_, line > 0 ? absl::StrCat(":", line) : "", ": ", field, ": ", what));
  }

 private:
  std::string Field(const std::string& key) const {
    return path_.empty() ? key : absl::StrCat(path_, ".", key);
  }
  static std::string Text(const YAML::Node& n) {
    if (n.IsScalar()) return n.Scalar();
    return n.IsSequence() ? "<list>" : n.IsMap() ? "<mapping>" : "<null>";
  }

  YAML::Node node_;
  std::string path_;
  const std::string& source_;
  std::set<std::string> seen_;
};

absl::Status ParseModel(Section s, ModelConfig* m) {
  KP_RETURN_IF_ERROR(s.CheckIsMap());
  KP_RETURN_IF_ERROR(s.Int("vocab_size", &m->vocab_size, 2));
  KP_RETURN_IF_ERROR(s.Int("d_model", &m->d_model, 2));
  KP_RETURN_IF_ERROR(s.Int("n_layers", &m->n_layers, 1));
  KP_RETURN_IF_ERROR(s.Int("n_heads", &m->n_heads, 1));
  KP_RETURN_IF_ERROR(s.Int("n_kv_heads", &m->n_kv_heads, 1));
  KP_RETURN_IF_ERROR(s.Int("ffn_hidden", &m->ffn_hidden, 1));
  KP_RETURN_IF_ERROR(s.Int("max_seq_len", &m->max_seq_len, 1));
  KP_RETURN_IF_ERROR(s.Double("rope_theta", &m->rope_theta, 1.0, 1e12));
  KP_RETURN_IF_ERROR(s.Double("norm_eps", &m->norm_eps, 0.0, 1.0, /*min_exclusive=*/true));
  KP_RETURN_IF_ERROR(s.Bool("tie_embeddings", &m->tie_embeddings));
  KP_RETURN_IF_ERROR(s.Bool("fused_kernels", &m->fused_kernels));
  return s.CheckNoUnknown();
}

absl::Status ParseTraining(Section s, TrainingConfig* t) {
  KP_RETURN_IF_ERROR(s.CheckIsMap());
  KP_RETURN_IF_ERROR(s.Int("seq_len", &t->seq_len, 1));
  KP_RETURN_IF_ERROR(s.Int("micro_batch", &t->micro_batch, 1));
  KP_RETURN_IF_ERROR(s.Int("grad_accum", &t->grad_accum, 1));
  KP_RETURN_IF_ERROR(s.Int("steps", &t->steps, 1));
  KP_RETURN_IF_ERROR(s.Double("lr", &t->lr, 0.0, 10.0, /*min_exclusive=*/true));
  KP_RETURN_IF_ERROR(s.Double("min_lr", &t->min_lr, 0.0, 10.0));
  KP_RETURN_IF_ERROR(s.Int("warmup_steps", &t->warmup_steps, 0));
  KP_RETURN_IF_ERROR(s.Double("weight_decay", &t->weight_decay, 0.0, 10.0));
  KP_RETURN_IF_ERROR(s.Double("beta1", &t->beta1, 0.0, 1.0));
  KP_RETURN_IF_ERROR(s.Double("beta2", &t->beta2, 0.0, 1.0));
  KP_RETURN_IF_ERROR(s.Double("eps", &t->eps, 0.0, 1.0, /*min_exclusive=*/true));
  KP_RETURN_IF_ERROR(s.Double("grad_clip", &t->grad_clip, 0.0, 1e9));
  KP_RETURN_IF_ERROR(s.Uint("seed", &t->seed));
  KP_RETURN_IF_ERROR(s.Enum<ActivationCheckpointing>(
      "activation_checkpointing", &t->activation_checkpointing,
      {{"none", ActivationCheckpointing::kNone},
       {"selective", ActivationCheckpointing::kSelective},
       {"full", ActivationCheckpointing::kFull}}));
  KP_RETURN_IF_ERROR(s.Int("loss_chunk_tokens", &t->loss_chunk_tokens, 1));
  KP_RETURN_IF_ERROR(s.Bool("offload_checkpoints", &t->offload_checkpoints));
  KP_RETURN_IF_ERROR(s.Int("mlp_tile_tokens", &t->mlp_tile_tokens, 0));
  KP_RETURN_IF_ERROR(s.Enum<NanPolicy>("nan_policy", &t->nan_policy,
                                       {{"skip", NanPolicy::kSkip}, {"stop", NanPolicy::kStop}}));
  KP_RETURN_IF_ERROR(s.Int("log_every", &t->log_every, 1));
  KP_RETURN_IF_ERROR(s.Int("checkpoint_every", &t->checkpoint_every, 0));
  KP_RETURN_IF_ERROR(s.Int("keep_checkpoints", &t->keep_checkpoints, 1));
  // Beta == 1 would never forget; reject it here where the field is known.
  if (t->beta1 >= 1.0) return s.Error("training.beta1", "must be < 1");
  if (t->beta2 >= 1.0) return s.Error("training.beta2", "must be < 1");
  return s.CheckNoUnknown();
}

absl::Status ParseParallel(Section s, ParallelConfig* p) {
  KP_RETURN_IF_ERROR(s.CheckIsMap());
  KP_RETURN_IF_ERROR(s.Int("dp", &p->dp, 1));
  KP_RETURN_IF_ERROR(s.Int("cp", &p->cp, 1));
  KP_RETURN_IF_ERROR(s.Enum<CpMode>("cp_mode", &p->cp_mode,
                                    {{"auto", CpMode::kAuto},
                                     {"ring", CpMode::kRing},
                                     {"allgather", CpMode::kAllGather},
                                     {"ulysses", CpMode::kUlysses}}));
  return s.CheckNoUnknown();
}

absl::Status ParseData(Section s, DataConfig* d) {
  KP_RETURN_IF_ERROR(s.CheckIsMap());
  KP_RETURN_IF_ERROR(s.Enum<DataConfig::Corpus>(
      "corpus", &d->corpus,
      {{"builtin", DataConfig::Corpus::kBuiltin}, {"path", DataConfig::Corpus::kPath}}));
  KP_RETURN_IF_ERROR(s.String("path", &d->path));
  Section b = s.Sub("builtin");
  KP_RETURN_IF_ERROR(b.CheckIsMap());
  BuiltinCorpusConfig& c = d->builtin;
  KP_RETURN_IF_ERROR(b.Uint("seed", &c.seed));
  KP_RETURN_IF_ERROR(b.Int("num_symbols", &c.num_symbols, 2, 65000));
  KP_RETURN_IF_ERROR(b.Int("order", &c.order, 0, 8));
  KP_RETURN_IF_ERROR(b.Int("support", &c.support, 1));
  KP_RETURN_IF_ERROR(b.Double("dirichlet_alpha", &c.dirichlet_alpha, 0.0, 1e6, true));
  KP_RETURN_IF_ERROR(b.Double("uniform_floor", &c.uniform_floor, 0.0, 1.0));
  KP_RETURN_IF_ERROR(b.Double("text_stop_prob", &c.text_stop_prob, 0.0, 1.0, true));
  KP_RETURN_IF_ERROR(b.Double("retrieval_prob", &c.retrieval_prob, 0.0, 1.0));
  KP_RETURN_IF_ERROR(b.Int("num_keys", &c.num_keys, 1, 65000));
  KP_RETURN_IF_ERROR(b.Int("pairs", &c.pairs, 1));
  KP_RETURN_IF_ERROR(b.Int("queries", &c.queries, 1));
  KP_RETURN_IF_ERROR(b.Double("filler_stop_prob", &c.filler_stop_prob, 0.0, 1.0, true));
  KP_RETURN_IF_ERROR(b.Int("num_tokens", &c.num_tokens, 1024));
  KP_RETURN_IF_ERROR(b.CheckNoUnknown());
  if (d->corpus == DataConfig::Corpus::kPath && d->path.empty()) {
    return s.Error("data.path", "required when data.corpus is 'path'");
  }
  if (d->corpus == DataConfig::Corpus::kBuiltin && !d->path.empty()) {
    return s.Error("data.path", "only allowed when data.corpus is 'path'");
  }
  return s.CheckNoUnknown();
}

absl::Status ParseFault(Section s, FaultConfig* f) {
  KP_RETURN_IF_ERROR(s.CheckIsMap());
  KP_RETURN_IF_ERROR(s.Bool("in_process_shrink", &f->in_process_shrink));
  KP_RETURN_IF_ERROR(s.Int("shrink_window_ms", &f->shrink_window_ms, 0));
  KP_RETURN_IF_ERROR(s.Int("min_dp", &f->min_dp, 1));
  return s.CheckNoUnknown();
}

absl::Status Invalid(const Config& c, const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(c.source, ": ", field, ": ", what));
}

}  // namespace

const char* PrecisionName(Precision p) {
  switch (p) {
    case Precision::kFp32: return "fp32";
    case Precision::kBf16: return "bf16";
    case Precision::kFp8: return "fp8";
  }
  return "?";
}

const char* ActivationCheckpointingName(ActivationCheckpointing a) {
  switch (a) {
    case ActivationCheckpointing::kNone: return "none";
    case ActivationCheckpointing::kSelective: return "selective";
    case ActivationCheckpointing::kFull: return "full";
  }
  return "?";
}

absl::Status ValidateConfig(const Config& c) {
  const ModelConfig& m = c.model;
  const TrainingConfig& t = c.training;
  if (m.d_model % m.n_heads != 0) {
    return Invalid(c, "model.n_heads", absl::StrCat("must divide model.d_model (", m.d_model,
                                                    "), got ", m.n_heads));
  }
  if (m.head_dim() % 2 != 0) {
    return Invalid(c, "model.n_heads", absl::StrCat("d_model / n_heads = ", m.head_dim(),
                                                    " must be even for RoPE"));
  }
  if (m.n_kv_heads > m.n_heads || m.n_heads % m.n_kv_heads != 0) {
    return Invalid(c, "model.n_kv_heads", absl::StrCat("must divide model.n_heads (", m.n_heads,
                                                       "), got ", m.n_kv_heads));
  }
  if (t.seq_len > m.max_seq_len) {
    return Invalid(c, "training.seq_len", absl::StrCat("must be <= model.max_seq_len (",
                                                       m.max_seq_len, "), got ", t.seq_len));
  }
  if (t.min_lr > t.lr) {
    return Invalid(c, "training.min_lr", absl::StrCat("must be <= training.lr (", t.lr,
                                                      "), got ", t.min_lr));
  }
  if (t.warmup_steps > t.steps) {
    return Invalid(c, "training.warmup_steps", absl::StrCat("must be <= training.steps (",
                                                            t.steps, "), got ", t.warmup_steps));
  }
  if (t.offload_checkpoints && t.activation_checkpointing != ActivationCheckpointing::kFull) {
    return Invalid(c, "training.offload_checkpoints",
                   absl::StrCat("needs training.activation_checkpointing: full (only whole-block "
                                "checkpoints are offloaded), got ",
                                ActivationCheckpointingName(t.activation_checkpointing)));
  }
  // Tiles cut this rank's part of the sequence (all of it, or 1/cp of it).
  if (const int64_t local = t.seq_len / std::max<int64_t>(c.parallel.cp, 1);
      t.mlp_tile_tokens > local) {
    return Invalid(c, "training.mlp_tile_tokens",
                   absl::StrCat("must be 0 (off) or at most the tokens per rank (training.seq_len / "
                                "parallel.cp = ", local, "), got ", t.mlp_tile_tokens));
  }
  if (c.parallel.cp > 1 && t.seq_len % (2 * c.parallel.cp) != 0) {
    return Invalid(c, "training.seq_len",
                   absl::StrCat("must be a multiple of 2 * parallel.cp (", 2 * c.parallel.cp,
                                ") for the zigzag layout, got ", t.seq_len));
  }
  if (c.parallel.cp > 1 && c.parallel.cp_mode == CpMode::kUlysses &&
      c.model.n_heads % c.parallel.cp != 0) {
    return Invalid(c, "parallel.cp_mode",
                   absl::StrCat("ulysses splits the heads over the cp ranks: model.n_heads (",
                                c.model.n_heads, ") must be a multiple of parallel.cp (",
                                c.parallel.cp, "); use ring or allgather, or a cp that divides ",
                                c.model.n_heads));
  }
  if (c.fault.in_process_shrink && c.parallel.cp > 1) {
    return Invalid(c, "fault.in_process_shrink",
                   absl::StrCat("needs parallel.cp == 1 (a dead rank takes a shard of every "
                                "sequence of its cp group with it), got cp ", c.parallel.cp));
  }
  if (c.fault.in_process_shrink && c.precision == Precision::kFp8) {
    return Invalid(c, "fault.in_process_shrink",
                   "not with precision fp8 (a redone step would update the amax history twice)");
  }
  if (c.fault.min_dp > c.parallel.dp) {
    return Invalid(c, "fault.min_dp", absl::StrCat("must be <= parallel.dp (", c.parallel.dp,
                                                   "), got ", c.fault.min_dp));
  }
  if (c.data.corpus == DataConfig::Corpus::kBuiltin &&
      c.data.builtin.vocab_size() > m.vocab_size) {
    return Invalid(c, "data.builtin.num_symbols",
                   absl::StrCat("num_symbols + num_keys + 4 = ", c.data.builtin.vocab_size(),
                                " must be <= model.vocab_size (", m.vocab_size, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Config> ParseConfig(const std::string& yaml_text, const std::string& source,
                                   const ParseOptions& options) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid YAML: ", e.what()));
  }
  Config c;
  c.source = source;
  if (!root || root.IsNull()) return absl::InvalidArgumentError(absl::StrCat(source, ": empty config"));
  Section top(root, "", c.source);
  KP_RETURN_IF_ERROR(top.CheckIsMap());
  KP_RETURN_IF_ERROR(ParseModel(top.Sub("model"), &c.model));
  KP_RETURN_IF_ERROR(ParseTraining(top.Sub("training"), &c.training));
  KP_RETURN_IF_ERROR(top.Enum<Precision>(
      "precision", &c.precision,
      {{"fp32", Precision::kFp32}, {"bf16", Precision::kBf16}, {"fp8", Precision::kFp8}}));
  if (c.precision == Precision::kFp8 && !options.fp8_linear_available) {
    return top.Error("precision",
                     "fp8 needs an FP8 Linear, and none is registered in this build "
                     "(use bf16, or a build that links runtime/fp8)");
  }
  KP_RETURN_IF_ERROR(ParseParallel(top.Sub("parallel"), &c.parallel));
  KP_RETURN_IF_ERROR(ParseData(top.Sub("data"), &c.data));
  KP_RETURN_IF_ERROR(ParseFault(top.Sub("fault"), &c.fault));
  // The FP8 library owns its section's schema (runtime/fp8/options_yaml.h);
  // the worker parses it where FP8 is linked, with the same unknown-key rule.
  c.fp8_yaml = top.Raw("fp8");
  KP_RETURN_IF_ERROR(top.CheckNoUnknown());
  KP_RETURN_IF_ERROR(ValidateConfig(c));
  return c;
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path, const ParseOptions& options) {
  auto text = ReadFile(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat("cannot read config ", path, ": ", text.status().message()));
  }
  return ParseConfig(*text, path, options);
}

}  // namespace kp::engine
