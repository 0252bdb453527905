#include "runtime/engine/data/markov_corpus.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "runtime/common/files.h"
#include "runtime/engine/data/token_file.h"

namespace kp::data {
namespace {

// Our own generator and distributions: std:: distributions differ between
// standard libraries, and the corpus must be the same everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next() {  // SplitMix64
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }  // [0, 1)
  uint32_t Below(uint32_t n) {
    return static_cast<uint32_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }
  double Normal() {  // Box-Muller
    double u1 = Uniform();
    while (u1 <= 0) u1 = Uniform();
    return std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * Uniform());
  }
  double Gamma(double a) {  // Marsaglia-Tsang; a < 1 by Gamma(a+1) U^(1/a)
    if (a < 1) {
      double u = Uniform();
      while (u <= 0) u = Uniform();
      return Gamma(a + 1) * std::pow(u, 1 / a);
    }
    const double d = a - 1.0 / 3, c = 1 / std::sqrt(9 * d);
    for (;;) {
      double x = Normal(), v = 1 + c * x;
      if (v <= 0) continue;
      v = v * v * v;
      const double u = Uniform();
      if (u < 1 - 0.0331 * x * x * x * x) return d * v;
      if (u > 0 && std::log(u) < 0.5 * x * x + d * (1 - v + std::log(v))) return d * v;
    }
  }

 private:
  uint64_t s_;
};

uint64_t Mix(uint64_t x) { return Rng(x).Next(); }

double BinaryEntropy(double p) {
  if (p <= 0 || p >= 1) return 0;
  return -p * std::log(p) - (1 - p) * std::log(1 - p);
}

// Index of the first cdf entry > u, clamped to the last entry (rounding).
uint32_t SampleCdf(const double* cdf, uint32_t n, double u) {
  const double* it = std::upper_bound(cdf, cdf + n - 1, u);
  return static_cast<uint32_t>(it - cdf);
}

}  // namespace

struct MarkovCorpus::Tables {
  uint32_t S = 0, K = 0, k = 0, states = 0;
  std::vector<double> p;    // [states, S]
  std::vector<double> cdf;  // [states, S]
  std::vector<double> pi;   // [states]
  std::vector<double> pi_cdf;
};

MarkovCorpus::MarkovCorpus(const CorpusSpec& spec, std::unique_ptr<Tables> tables)
    : spec_(spec), tables_(std::move(tables)) {}
MarkovCorpus::~MarkovCorpus() = default;

uint32_t MarkovCorpus::vocab_size() const { return tables_->S + tables_->K + 4; }
uint32_t MarkovCorpus::text_token() const { return tables_->S + tables_->K; }
uint32_t MarkovCorpus::retr_token() const { return tables_->S + tables_->K + 1; }
uint32_t MarkovCorpus::query_token() const { return tables_->S + tables_->K + 2; }
uint32_t MarkovCorpus::eos_token() const { return tables_->S + tables_->K + 3; }

double MarkovCorpus::TransitionProb(uint32_t state, uint32_t next) const {
  return tables_->p[static_cast<size_t>(state) * tables_->S + next];
}
double MarkovCorpus::StationaryProb(uint32_t state) const { return tables_->pi[state]; }

std::string CorpusSpecHash(const CorpusSpec& s) {
  char buf[512];
  std::snprintf(buf, sizeof(buf), "v1|%llu|%d|%d|%d|%.17g|%.17g|%.17g|%.17g|%d|%d|%d|%.17g",
                static_cast<unsigned long long>(s.seed), s.num_symbols, s.order, s.support,
                s.dirichlet_alpha, s.uniform_floor, s.text_stop_prob, s.retrieval_prob,
                s.num_keys, s.pairs, s.queries, s.filler_stop_prob);
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (const char* c = buf; *c; ++c) h = (h ^ static_cast<unsigned char>(*c)) * 1099511628211ULL;
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

absl::StatusOr<std::unique_ptr<MarkovCorpus>> MarkovCorpus::Create(const CorpusSpec& s) {
  auto bad = [](const std::string& field, const std::string& why) {
    return absl::InvalidArgumentError("corpus spec: " + field + " " + why);
  };
  if (s.num_symbols < 2) return bad("num_symbols", absl::StrCat("must be >= 2, got ", s.num_symbols));
  if (s.order < 1) return bad("order", absl::StrCat("must be >= 1, got ", s.order));
  if (s.support < 1 || s.support > s.num_symbols) {
    return bad("support", absl::StrCat("must be in [1, num_symbols], got ", s.support));
  }
  if (!(s.dirichlet_alpha > 0)) return bad("dirichlet_alpha", "must be > 0");
  if (!(s.uniform_floor > 0 && s.uniform_floor <= 1)) {
    return bad("uniform_floor", "must be in (0, 1] (it keeps the chain irreducible)");
  }
  if (!(s.text_stop_prob > 0 && s.text_stop_prob <= 1)) return bad("text_stop_prob", "must be in (0, 1]");
  if (!(s.filler_stop_prob > 0 && s.filler_stop_prob <= 1)) {
    return bad("filler_stop_prob", "must be in (0, 1]");
  }
  if (!(s.retrieval_prob >= 0 && s.retrieval_prob <= 1)) return bad("retrieval_prob", "must be in [0, 1]");
  if (s.num_keys < 1) return bad("num_keys", "must be >= 1");
  if (s.pairs < 1 || s.pairs > s.num_keys) return bad("pairs", "must be in [1, num_keys]");
  if (s.queries < 0) return bad("queries", "must be >= 0");
  double entries = std::pow(static_cast<double>(s.num_symbols), s.order + 1);
  if (entries > static_cast<double>(1 << 22)) {
    return bad("num_symbols/order", absl::StrCat("give a table of ", entries, " entries (max 2^22)"));
  }
  if (static_cast<uint64_t>(s.num_symbols) + s.num_keys + 4 > 65536) {
    return bad("num_symbols + num_keys", "give a vocabulary over 65536");
  }

  auto t = std::make_unique<Tables>();
  t->S = s.num_symbols;
  t->K = s.num_keys;
  t->k = s.order;
  t->states = 1;
  for (int i = 0; i < s.order; ++i) t->states *= t->S;
  const uint32_t S = t->S, N = t->states;
  t->p.assign(static_cast<size_t>(N) * S, 0.0);
  t->cdf.resize(t->p.size());
  Rng rng(Mix(s.seed ^ 0x7ab1e5ULL));
  std::vector<uint32_t> perm(S);
  std::vector<double> w(s.support);
  for (uint32_t st = 0; st < N; ++st) {
    std::iota(perm.begin(), perm.end(), 0);
    double total = 0;
    for (int j = 0; j < s.support; ++j) {  // partial Fisher-Yates: distinct support
      std::swap(perm[j], perm[j + rng.Below(S - j)]);
      w[j] = rng.Gamma(s.dirichlet_alpha);
      total += w[j];
    }
    double* row = &t->p[static_cast<size_t>(st) * S];
    for (uint32_t c = 0; c < S; ++c) row[c] = s.uniform_floor / S;
    for (int j = 0; j < s.support; ++j) {
      // A Gamma draw can underflow to 0 for tiny alpha: fall back to uniform weights.
      row[perm[j]] += (1 - s.uniform_floor) * (total > 0 ? w[j] / total : 1.0 / s.support);
    }
    double acc = 0;
    for (uint32_t c = 0; c < S; ++c) t->cdf[static_cast<size_t>(st) * S + c] = (acc += row[c]);
  }

  // Stationary distribution of the k-gram chain, state' = (state * S + c) mod S^k.
  std::vector<double> pi(N, 1.0 / N), next(N);
  bool converged = false;
  for (int it = 0; it < 200000 && !converged; ++it) {
    std::fill(next.begin(), next.end(), 0.0);
    for (uint32_t st = 0; st < N; ++st) {
      const double* row = &t->p[static_cast<size_t>(st) * S];
      const uint32_t base = static_cast<uint32_t>((static_cast<uint64_t>(st) * S) % N);
      for (uint32_t c = 0; c < S; ++c) next[base + c] += pi[st] * row[c];
    }
    double diff = 0, sum = 0;
    for (uint32_t st = 0; st < N; ++st) sum += next[st];
    for (uint32_t st = 0; st < N; ++st) {
      next[st] /= sum;
      diff += std::abs(next[st] - pi[st]);
    }
    pi.swap(next);
    converged = diff < 1e-14;
  }
  if (!converged) return absl::InternalError("corpus: stationary distribution did not converge");
  t->pi = pi;
  t->pi_cdf.resize(N);
  double acc = 0;
  for (uint32_t st = 0; st < N; ++st) t->pi_cdf[st] = (acc += pi[st]);

  double h_markov = 0, h_pi = 0;
  for (uint32_t st = 0; st < N; ++st) {
    double h = 0;
    for (uint32_t c = 0; c < S; ++c) {
      const double p = t->p[static_cast<size_t>(st) * S + c];
      if (p > 0) h -= p * std::log(p);
    }
    h_markov += pi[st] * h;
    if (pi[st] > 0) h_pi -= pi[st] * std::log(pi[st]);
  }
  const double q = s.text_stop_prob, qf = s.filler_stop_prob, pr = s.retrieval_prob;
  const double k = s.order, n = s.pairs, m = s.queries;
  const double h_text = h_pi + (BinaryEntropy(q) + (1 - q) * h_markov) / q;
  const double len_text = 1 + k + 1 / q;  // type, k-gram, symbols + EOS
  double h_keys = 0;
  for (int i = 0; i < s.pairs; ++i) h_keys += std::log(static_cast<double>(s.num_keys - i));
  const double h_retr = h_keys + n * std::log(static_cast<double>(S)) + h_pi +
                        (BinaryEntropy(qf) + (1 - qf) * h_markov) / qf + m * std::log(n);
  const double len_retr = 1 + 2 * n + k + 1 / qf + 2 * m + 1;  // ... QUERY, queries, EOS

  std::unique_ptr<MarkovCorpus> corpus(new MarkovCorpus(s, std::move(t)));
  corpus->markov_entropy_rate_ = h_markov;
  corpus->entropy_rate_ = (BinaryEntropy(pr) + (1 - pr) * h_text + pr * h_retr) /
                          ((1 - pr) * len_text + pr * len_retr);
  return corpus;
}

std::vector<uint32_t> MarkovCorpus::Generate(uint64_t num_tokens) const {
  const Tables& t = *tables_;
  const uint32_t S = t.S, N = t.states;
  Rng rng(Mix(spec_.seed ^ 0x57ea3ULL));
  std::vector<uint32_t> out;
  out.reserve(num_tokens + 1024);
  std::vector<uint32_t> keys(t.K), stored_keys, stored_vals;
  // Emits a k-gram from pi then the Markov body until the stop event.
  auto markov = [&](double stop_prob, uint32_t stop_token) {
    uint32_t st = SampleCdf(t.pi_cdf.data(), N, rng.Uniform() * t.pi_cdf.back());
    for (uint32_t j = 0, div = N / S; j < t.k; ++j, div = div > 1 ? div / S : 1) {
      out.push_back((st / div) % S);
    }
    for (;;) {
      if (rng.Uniform() < stop_prob) {
        out.push_back(stop_token);
        return;
      }
      const uint32_t c = SampleCdf(&t.cdf[static_cast<size_t>(st) * S], S, rng.Uniform());
      out.push_back(c);
      st = static_cast<uint32_t>((static_cast<uint64_t>(st) * S + c) % N);
      if (out.size() > num_tokens) return;
    }
  };
  while (out.size() < num_tokens) {
    if (rng.Uniform() >= spec_.retrieval_prob) {
      out.push_back(text_token());
      markov(spec_.text_stop_prob, eos_token());
      continue;
    }
    out.push_back(retr_token());
    std::iota(keys.begin(), keys.end(), 0);
    stored_keys.clear();
    stored_vals.clear();
    for (int i = 0; i < spec_.pairs; ++i) {
      std::swap(keys[i], keys[i + rng.Below(t.K - i)]);
      stored_keys.push_back(S + keys[i]);
      stored_vals.push_back(rng.Below(S));
      out.push_back(stored_keys.back());
      out.push_back(stored_vals.back());
    }
    markov(spec_.filler_stop_prob, query_token());
    for (int i = 0; i < spec_.queries; ++i) {
      const uint32_t j = rng.Below(spec_.pairs);
      out.push_back(stored_keys[j]);
      out.push_back(stored_vals[j]);
    }
    out.push_back(eos_token());
  }
  out.resize(num_tokens);
  return out;
}

absl::StatusOr<double> MarkovCorpus::NegLogProb(std::span<const uint32_t> tokens) const {
  const Tables& t = *tables_;
  const uint32_t S = t.S, N = t.states;
  enum class Phase { kStart, kInit, kBody, kKey, kValue, kQueryKey, kQueryValue, kEos };
  Phase phase = Phase::kStart;
  bool retrieval = false;
  uint32_t st = 0, depth = 0;  // k-gram prefix and its length during kInit
  int pairs = 0, queries = 0;
  std::unordered_map<uint32_t, uint32_t> stored;
  uint32_t expect_value = 0;
  double nll = 0;
  // Marginal probability of the k-gram prefix `st` of length `len` (most
  // significant symbol first): a contiguous range of states.
  auto prefix_prob = [&](uint32_t prefix, uint32_t len) {
    uint32_t span = 1;
    for (uint32_t j = len; j < t.k; ++j) span *= S;
    double p = 0;
    for (uint32_t s2 = prefix * span; s2 < (prefix + 1) * span; ++s2) p += t.pi[s2];
    return p;
  };
  auto after_init = [&]() { return Phase::kBody; };
  for (size_t i = 0; i < tokens.size(); ++i) {
    const uint32_t x = tokens[i];
    auto impossible = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat("corpus: token ", x, " at position ", i,
                                                     " is impossible: ", why));
    };
    const bool symbol = x < S;
    switch (phase) {
      case Phase::kStart:
        if (x == text_token() && spec_.retrieval_prob < 1) {
          nll -= std::log(1 - spec_.retrieval_prob);
          retrieval = false;
        } else if (x == retr_token() && spec_.retrieval_prob > 0) {
          nll -= std::log(spec_.retrieval_prob);
          retrieval = true;
          pairs = 0;
          stored.clear();
        } else {
          return impossible("expected a segment type token");
        }
        phase = retrieval ? Phase::kKey : Phase::kInit;
        st = 0;
        depth = 0;
        break;
      case Phase::kInit: {
        if (!symbol) return impossible("expected a symbol of the initial k-gram");
        const double before = prefix_prob(st, depth);
        st = st * S + x;
        ++depth;
        nll -= std::log(prefix_prob(st, depth) / before);
        if (depth == t.k) phase = after_init();
        break;
      }
      case Phase::kBody: {
        const double q = retrieval ? spec_.filler_stop_prob : spec_.text_stop_prob;
        const uint32_t stop = retrieval ? query_token() : eos_token();
        if (x == stop) {
          nll -= std::log(q);
          if (!retrieval) {
            phase = Phase::kStart;
          } else {
            queries = 0;
            phase = spec_.queries > 0 ? Phase::kQueryKey : Phase::kEos;
          }
        } else if (symbol) {
          const double p = (1 - q) * t.p[static_cast<size_t>(st) * S + x];
          nll -= std::log(p);
          st = static_cast<uint32_t>((static_cast<uint64_t>(st) * S + x) % N);
        } else {
          return impossible("expected a symbol or the end of the Markov run");
        }
        break;
      }
      case Phase::kKey:
        if (x < S || x >= S + t.K || stored.count(x)) return impossible("expected a new key");
        nll += std::log(static_cast<double>(t.K - pairs));
        expect_value = x;
        phase = Phase::kValue;
        break;
      case Phase::kValue:
        if (!symbol) return impossible("expected a value symbol");
        nll += std::log(static_cast<double>(S));
        stored[expect_value] = x;
        ++pairs;
        phase = pairs == spec_.pairs ? Phase::kInit : Phase::kKey;
        st = 0;
        depth = 0;
        break;
      case Phase::kQueryKey: {
        auto it = stored.find(x);
        if (it == stored.end()) return impossible("expected a stored key");
        nll += std::log(static_cast<double>(spec_.pairs));
        expect_value = it->second;
        phase = Phase::kQueryValue;
        break;
      }
      case Phase::kQueryValue:
        if (x != expect_value) return impossible(absl::StrCat("the key's value is ", expect_value));
        ++queries;
        phase = queries == spec_.queries ? Phase::kEos : Phase::kQueryKey;
        break;
      case Phase::kEos:
        if (x != eos_token()) return impossible("expected EOS");
        phase = Phase::kStart;
        break;
    }
  }
  return nll;
}

absl::StatusOr<std::string> EnsureCorpusFile(const CorpusSpec& spec, uint64_t num_tokens,
                                             const std::string& cache_dir) {
  const std::string path = (std::filesystem::path(cache_dir) /
                            absl::StrCat("kp-corpus-", CorpusSpecHash(spec), "-", num_tokens, ".tok"))
                               .string();
  if (std::filesystem::exists(path)) {
    absl::StatusOr<std::unique_ptr<TokenFile>> f = TokenFile::Open(path);
    if (f.ok() && (*f)->size() == num_tokens) return path;
    spdlog::warn("corpus cache {} is unusable ({}); regenerating", path,
                 f.ok() ? "wrong length" : f.status().ToString());
  }
  KP_ASSIGN_OR_RETURN(std::unique_ptr<MarkovCorpus> corpus, MarkovCorpus::Create(spec));
  KP_RETURN_IF_ERROR(MakeDirs(cache_dir));
  const std::vector<uint32_t> tokens = corpus->Generate(num_tokens);
  KP_RETURN_IF_ERROR(WriteTokenFile(path, tokens, corpus->vocab_size()));
  spdlog::info("wrote built-in corpus ({} tokens, entropy rate {:.4f} nats/token) to {}", num_tokens,
               corpus->entropy_rate(), path);
  return path;
}

}  // namespace kp::data
