#include "runtime/engine/data/sampler.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "runtime/engine/data/token_file.h"

namespace kp::data {
namespace {

std::shared_ptr<const TokenSource> Source(size_t n = 100000, uint32_t vocab = 1000) {
  std::mt19937 gen(3);
  std::vector<uint32_t> t(n);
  for (auto& x : t) x = gen() % vocab;
  return std::make_shared<InMemoryTokenSource>(std::move(t), vocab);
}

std::unique_ptr<Sampler> Make(std::shared_ptr<const TokenSource> src, SamplerOptions o) {
  auto s = Sampler::Create(std::move(src), o);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(s).value();
}

at::Tensor Get(const Sampler& s, int64_t step, int micro = 0) {
  auto b = s.Batch(step, micro);
  EXPECT_TRUE(b.ok()) << b.status();
  return *b;
}

TEST(Sampler, BatchIsWindowsOfTheSource) {
  auto src = Source();
  auto s = Make(src, {.seed = 7, .seq_len = 64, .global_batch = 8});
  at::Tensor b = Get(*s, 3);
  ASSERT_EQ(b.sizes(), (std::vector<int64_t>{8, 65}));
  ASSERT_EQ(b.scalar_type(), at::kLong);
  const auto& tokens = static_cast<const InMemoryTokenSource&>(*src).tokens();
  for (int64_t i = 0; i < 8; ++i) {
    const uint64_t off = s->SampleOffset(3 * 8 + i);
    ASSERT_LE(off + 65, tokens.size());
    for (int64_t j = 0; j < 65; ++j) ASSERT_EQ(b[i][j].item<int64_t>(), tokens[off + j]);
  }
}

TEST(Sampler, DeterministicAndSeeded) {
  auto src = Source();
  auto a = Make(src, {.seed = 7, .seq_len = 32, .global_batch = 4});
  auto b = Make(src, {.seed = 7, .seq_len = 32, .global_batch = 4});
  auto c = Make(src, {.seed = 8, .seq_len = 32, .global_batch = 4});
  for (int step = 0; step < 5; ++step) {
    EXPECT_TRUE(at::equal(Get(*a, step), Get(*b, step)));
    EXPECT_FALSE(at::equal(Get(*a, step), Get(*c, step)));
  }
  EXPECT_FALSE(at::equal(Get(*a, 0), Get(*a, 1)));
}

TEST(Sampler, ResumeSeesTheSameSamples) {
  auto src = Source();
  SamplerOptions o{.seed = 42, .seq_len = 16, .global_batch = 6};
  auto run = Make(src, o);
  std::vector<at::Tensor> uninterrupted;
  for (int step = 0; step < 10; ++step) uninterrupted.push_back(Get(*run, step));
  auto resumed = Make(src, o);  // a fresh process resuming at step 5
  for (int step = 5; step < 10; ++step) EXPECT_TRUE(at::equal(Get(*resumed, step), uninterrupted[step]));
  EXPECT_EQ(run->DataPosition(5), 30);
}

TEST(Sampler, DataParallelRanksPartitionTheGlobalBatch) {
  auto src = Source();
  for (int accum : {1, 2}) {
    SamplerOptions one{.seed = 1, .seq_len = 24, .global_batch = 16, .grad_accum = 1};
    auto single = Make(src, one);
    for (int world : {2, 4}) {
      std::vector<std::unique_ptr<Sampler>> ranks;
      for (int r = 0; r < world; ++r) {
        ranks.push_back(Make(src, {.seed = 1, .seq_len = 24, .global_batch = 16, .dp_rank = r,
                                   .dp_world = world, .grad_accum = accum}));
      }
      EXPECT_EQ(ranks[0]->micro_batch(), 16 / world / accum);
      for (int step = 0; step < 4; ++step) {
        std::vector<at::Tensor> parts;
        for (int r = 0; r < world; ++r) {
          for (int m = 0; m < accum; ++m) parts.push_back(Get(*ranks[r], step, m));
        }
        EXPECT_TRUE(at::equal(at::cat(parts, 0), Get(*single, step)))
            << "world " << world << " accum " << accum << " step " << step;
      }
    }
  }
}

TEST(Sampler, TokenFileAndMemoryAgree) {
  auto mem = Source(50000, 300);
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp ? tmp : "/tmp") + "/sampler.tok";
  ASSERT_TRUE(
      WriteTokenFile(path, static_cast<const InMemoryTokenSource&>(*mem).tokens(), 300).ok());
  auto file = TokenFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  std::shared_ptr<const TokenSource> fsrc = std::move(file).value();
  SamplerOptions o{.seed = 9, .seq_len = 128, .global_batch = 4};
  EXPECT_TRUE(at::equal(Get(*Make(mem, o), 2), Get(*Make(fsrc, o), 2)));
}

TEST(Sampler, BadOptionsNameTheField) {
  auto src = Source(100);
  auto s = Sampler::Create(src, {.seq_len = 10, .global_batch = 6, .dp_world = 4});
  EXPECT_NE(s.status().message().find("global_batch"), std::string::npos) << s.status();
  s = Sampler::Create(src, {.seq_len = 200, .global_batch = 4});
  EXPECT_NE(s.status().message().find("seq_len"), std::string::npos) << s.status();
  s = Sampler::Create(src, {.seq_len = 10, .global_batch = 4, .dp_rank = 2, .dp_world = 2});
  EXPECT_NE(s.status().message().find("dp_rank"), std::string::npos) << s.status();
}

}  // namespace
}  // namespace kp::data
