#include "runtime/engine/data/markov_corpus.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "runtime/engine/data/token_file.h"

namespace kp::data {
namespace {

std::unique_ptr<MarkovCorpus> Make(const CorpusSpec& spec) {
  auto c = MarkovCorpus::Create(spec);
  EXPECT_TRUE(c.ok()) << c.status();
  return std::move(c).value();
}

TEST(MarkovCorpus, StationaryDistributionIsStationary) {
  CorpusSpec spec;
  auto c = Make(spec);
  const uint32_t S = spec.num_symbols, N = S * S;
  std::vector<double> next(N, 0.0);
  double total = 0;
  for (uint32_t s = 0; s < N; ++s) {
    total += c->StationaryProb(s);
    double row = 0;
    for (uint32_t x = 0; x < S; ++x) {
      row += c->TransitionProb(s, x);
      next[(s * S + x) % N] += c->StationaryProb(s) * c->TransitionProb(s, x);
    }
    ASSERT_NEAR(row, 1.0, 1e-12);
  }
  EXPECT_NEAR(total, 1.0, 1e-12);
  for (uint32_t s = 0; s < N; ++s) ASSERT_NEAR(next[s], c->StationaryProb(s), 1e-12);
}

TEST(MarkovCorpus, EntropyRateWellBelowUniform) {
  auto c = Make(CorpusSpec{});
  const double log_s = std::log(32.0);
  EXPECT_GT(c->markov_entropy_rate(), 0.1);
  EXPECT_LT(c->markov_entropy_rate(), 0.7 * log_s);
  EXPECT_LT(c->entropy_rate(), 0.7 * std::log(static_cast<double>(c->vocab_size())));
}

// The real check of the tables, the generator and the formula together: the
// true model's average -log p on generated text is the entropy rate.
void ExpectEmpiricalMatches(const CorpusSpec& spec, uint64_t n) {
  auto c = Make(spec);
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<uint32_t> tokens = c->Generate(n);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(tokens.size(), n);
  EXPECT_LT(secs, 3.0) << "generating " << n << " tokens took " << secs << " s";
  auto nll = c->NegLogProb(tokens);
  ASSERT_TRUE(nll.ok()) << nll.status();
  const double empirical = *nll / static_cast<double>(n);
  std::printf("entropy rate %.5f nats/token (Markov alone %.5f, log V %.5f), empirical %.5f, "
              "ratio %.5f, %.2f M tokens/s\n",
              c->entropy_rate(), c->markov_entropy_rate(), std::log(double(c->vocab_size())),
              empirical, empirical / c->entropy_rate(), n / secs / 1e6);
  // Tighter than the 1% asked for: the sampling error here is ~0.1%, and a
  // one-token slip in the expected segment length would shift the rate ~0.4%.
  EXPECT_NEAR(empirical / c->entropy_rate(), 1.0, 0.005)
      << "empirical " << empirical << " nats/token, computed " << c->entropy_rate();
}

TEST(MarkovCorpus, PureMarkovEmpiricalCrossEntropyMatchesRate) {
  CorpusSpec spec;
  spec.retrieval_prob = 0;
  ExpectEmpiricalMatches(spec, 3'000'000);
}

TEST(MarkovCorpus, MixedEmpiricalCrossEntropyMatchesRate) {
  CorpusSpec spec;
  spec.seed = 99;
  ExpectEmpiricalMatches(spec, 3'000'000);
}

TEST(MarkovCorpus, OrderThreeAndOtherShapes) {
  CorpusSpec spec;
  spec.seed = 5;
  spec.num_symbols = 16;
  spec.order = 3;
  spec.support = 3;
  spec.retrieval_prob = 0.5;
  spec.pairs = 4;
  spec.queries = 2;
  spec.num_keys = 8;
  ExpectEmpiricalMatches(spec, 2'000'000);
}

TEST(MarkovCorpus, DeterministicInSeed) {
  CorpusSpec spec;
  auto a = Make(spec)->Generate(50000);
  EXPECT_EQ(a, Make(spec)->Generate(50000));
  spec.seed += 1;
  EXPECT_NE(a, Make(spec)->Generate(50000));
  EXPECT_NE(CorpusSpecHash(spec), CorpusSpecHash(CorpusSpec{}));
}

TEST(MarkovCorpus, RetrievalSegmentsAreConsistent) {
  CorpusSpec spec;
  auto c = Make(spec);
  std::vector<uint32_t> tokens = c->Generate(200000);
  size_t retr = 0, text = 0, query_pos = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    retr += tokens[i] == c->retr_token();
    text += tokens[i] == c->text_token();
    if (tokens[i] == c->query_token() && query_pos == 0) query_pos = i;
    ASSERT_LT(tokens[i], c->vocab_size());
  }
  EXPECT_GT(retr, 0u);
  EXPECT_NEAR(static_cast<double>(retr) / (retr + text), spec.retrieval_prob, 0.1);
  ASSERT_GT(query_pos, 0u);
  // A query answered with the wrong value is impossible under the model.
  ASSERT_LT(query_pos + 2, tokens.size());
  tokens[query_pos + 2] = (tokens[query_pos + 2] + 1) % spec.num_symbols;
  auto nll = c->NegLogProb(tokens);
  EXPECT_EQ(nll.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(nll.status().message().find(std::to_string(query_pos + 2)), std::string::npos)
      << nll.status();
}

TEST(MarkovCorpus, BadSpecNamesField) {
  CorpusSpec spec;
  spec.pairs = 100;
  auto c = MarkovCorpus::Create(spec);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("pairs"), std::string::npos);
  spec = CorpusSpec{};
  spec.num_symbols = 256;
  spec.order = 3;
  EXPECT_NE(MarkovCorpus::Create(spec).status().message().find("num_symbols"), std::string::npos);
}

TEST(MarkovCorpus, EnsureCorpusFileGeneratesOnceAndMatches) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp ? tmp : "/tmp") + "/corpus_cache";
  CorpusSpec spec;
  auto path = EnsureCorpusFile(spec, 100000, dir);
  ASSERT_TRUE(path.ok()) << path.status();
  const auto mtime = std::filesystem::last_write_time(*path);
  auto again = EnsureCorpusFile(spec, 100000, dir);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *path);
  EXPECT_EQ(std::filesystem::last_write_time(*again), mtime);
  auto f = TokenFile::Open(*path);
  ASSERT_TRUE(f.ok()) << f.status();
  const auto expected = Make(spec)->Generate(100000);
  ASSERT_EQ((*f)->size(), expected.size());
  EXPECT_EQ((*f)->vocab_size(), Make(spec)->vocab_size());
  for (size_t i = 0; i < expected.size(); ++i) ASSERT_EQ((*f)->at(i), expected[i]);
}

}  // namespace
}  // namespace kp::data
