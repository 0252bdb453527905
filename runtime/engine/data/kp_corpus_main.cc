// kp-corpus OUT.tok NUM_TOKENS [SEED]: writes the built-in corpus (default
// spec) as a token file and prints its entropy rate, the loss floor a
// training run is measured against.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "runtime/engine/data/markov_corpus.h"
#include "runtime/engine/data/token_file.h"

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: %s OUT.tok NUM_TOKENS [SEED]\n", argv[0]);
    return 2;
  }
  kp::data::CorpusSpec spec;
  if (argc == 4) spec.seed = std::strtoull(argv[3], nullptr, 10);
  const unsigned long long n = std::strtoull(argv[2], nullptr, 10);
  if (n == 0) {
    std::fprintf(stderr, "kp-corpus: NUM_TOKENS must be a positive integer, got '%s'\n", argv[2]);
    return 2;
  }
  auto corpus = kp::data::MarkovCorpus::Create(spec);
  if (!corpus.ok()) {
    std::fprintf(stderr, "kp-corpus: %s\n", corpus.status().ToString().c_str());
    return 1;
  }
  const auto tokens = (*corpus)->Generate(n);
  absl::Status s = kp::data::WriteTokenFile(argv[1], tokens, (*corpus)->vocab_size());
  if (!s.ok()) {
    std::fprintf(stderr, "kp-corpus: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("wrote %llu tokens to %s\nvocab_size %u\nentropy_rate_nats_per_token %.6f\n"
              "markov_entropy_rate_nats %.6f\nspec_hash %s\n",
              n, argv[1], (*corpus)->vocab_size(), (*corpus)->entropy_rate(),
              (*corpus)->markov_entropy_rate(), kp::data::CorpusSpecHash(spec).c_str());
  return 0;
}
