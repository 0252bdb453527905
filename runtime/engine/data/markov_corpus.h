// The built-in corpus: a generated token stream whose entropy rate is known
// exactly, so a training run's loss can be checked against a number.
//
// The stream is a sequence of independent segments. Each segment starts with
// a type token, TEXT (probability 1 - retrieval_prob) or RETR:
//   TEXT  x1..xk  y y y ... EOS
//       an order-k Markov text over the symbols [0, num_symbols): the first k
//       symbols are drawn from the stationary distribution of k-grams, then
//       each step ends the segment (EOS) with probability text_stop_prob or
//       emits a symbol from P(. | last k symbols).
//   RETR  key1 val1 ... keyn valn  <filler>  QUERY  key val ... key val  EOS
//       n = pairs distinct keys (uniform without replacement from num_keys
//       key tokens), each with a uniform value symbol; a Markov filler like a
//       TEXT body that ends with QUERY (probability filler_stop_prob per step);
//       then `queries` keys drawn uniformly from the n stored ones, each
//       followed by its value (determined by the context: zero entropy).
// Transition rows are seeded: each is a Dirichlet(dirichlet_alpha) draw over
// `support` random symbols, mixed with uniform_floor of the uniform
// distribution (which makes the chain irreducible and aperiodic), so the
// Markov entropy rate sits well below log(num_symbols).
//
// Vocabulary: symbols [0, S), keys [S, S + K), then TEXT, RETR, QUERY, EOS.
//
// Entropy rate (nats/token) of the mix, by renewal-reward: segments are i.i.d.
// and the tokens of a segment are an invertible function of its random
// choices, so rate = E[entropy of a segment] / E[tokens in a segment], with
//   H(text body)  = H(pi_k) + (1/q) (h(q) + (1 - q) H_markov)
//   H(retr)       = sum_{i<n} log(K - i) + n log S + H(filler) + m log n
// where pi_k is the stationary k-gram distribution (power iteration), h the
// binary entropy, H_markov = sum_s pi(s) H(P(. | s)), plus h(retrieval_prob)
// for the type token. It is the loss of a model that knows the true tables and
// sees the whole current segment; LogProb() scores text with exactly that model.
#ifndef KP_RUNTIME_ENGINE_DATA_MARKOV_CORPUS_H_
#define KP_RUNTIME_ENGINE_DATA_MARKOV_CORPUS_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/common/status.h"

namespace kp::data {

struct CorpusSpec {
  uint64_t seed = 1234;  // tables and stream both follow from it
  int num_symbols = 32;  // S: Markov alphabet (also the value alphabet)
  int order = 2;         // k
  int support = 6;       // nonzero entries of a row before the floor
  double dirichlet_alpha = 0.5;
  double uniform_floor = 0.01;
  double text_stop_prob = 1.0 / 256;  // q: mean TEXT body ~ 256 symbols
  double retrieval_prob = 0.25;       // 0 gives a pure Markov corpus
  int num_keys = 32;                  // K
  int pairs = 8;                      // n
  int queries = 8;                    // m
  double filler_stop_prob = 1.0 / 384;  // mean distance key -> query ~ 400
};

// A hex digest of every field: names the cache file and goes in checkpoints.
std::string CorpusSpecHash(const CorpusSpec& spec);

class MarkovCorpus {
 public:
  // INVALID_ARGUMENT naming the field if the spec is out of range (vocab over
  // 65536, a table num_symbols^(order+1) over 2^22 entries, a probability
  // outside its range, pairs > num_keys).
  static absl::StatusOr<std::unique_ptr<MarkovCorpus>> Create(const CorpusSpec& spec);

  const CorpusSpec& spec() const { return spec_; }
  uint32_t vocab_size() const;
  uint32_t text_token() const;
  uint32_t retr_token() const;
  uint32_t query_token() const;
  uint32_t eos_token() const;

  // Nats per token of the mixed stream (see above): the loss floor.
  double entropy_rate() const { return entropy_rate_; }
  // Nats per symbol of the Markov source alone (compare with log(num_symbols)).
  double markov_entropy_rate() const { return markov_entropy_rate_; }

  // The first num_tokens tokens of the stream (deterministic in spec.seed;
  // the last segment is cut off).
  std::vector<uint32_t> Generate(uint64_t num_tokens) const;

  // Sum of -log p over the tokens under the true model, from the first
  // token (which must start a segment) to the end (a cut last segment is
  // scored up to the cut). INVALID_ARGUMENT naming the position if the text
  // is impossible under the model (a test of the generator and the tables).
  absl::StatusOr<double> NegLogProb(std::span<const uint32_t> tokens) const;

  // P(next | k-gram state) for the text source; state = sum x_j S^(k-1-j).
  double TransitionProb(uint32_t state, uint32_t next) const;
  double StationaryProb(uint32_t state) const;

  ~MarkovCorpus();

 private:
  struct Tables;
  MarkovCorpus(const CorpusSpec& spec, std::unique_ptr<Tables> tables);
  CorpusSpec spec_;
  std::unique_ptr<Tables> tables_;
  double entropy_rate_ = 0;
  double markov_entropy_rate_ = 0;
};

// The corpus as a token file under cache_dir (named by CorpusSpecHash and
// num_tokens), generated and written atomically on first use; returns its
// path. Concurrent callers (ranks) may race: each writes a complete file and
// the last rename wins with identical contents.
absl::StatusOr<std::string> EnsureCorpusFile(const CorpusSpec& spec, uint64_t num_tokens,
                                             const std::string& cache_dir);

}  // namespace kp::data

#endif  // KP_RUNTIME_ENGINE_DATA_MARKOV_CORPUS_H_
