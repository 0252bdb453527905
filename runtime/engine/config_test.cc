#include "runtime/engine/config.h"

#include <string>

#include <gtest/gtest.h>

namespace kp::engine {
namespace {

constexpr char kMinimal[] = R"(
model:
  vocab_size: 256
  d_model: 64
  n_layers: 2
  n_heads: 4
  n_kv_heads: 2
  ffn_hidden: 128
  max_seq_len: 64
training:
  seq_len: 32
  steps: 10
  warmup_steps: 2
)";

// The status message of parsing kMinimal with `extra` appended.
std::string ErrorOf(const std::string& text) {
  auto c = ParseConfig(text, "test.yaml");
  EXPECT_FALSE(c.ok()) << text;
  return c.ok() ? "" : std::string(c.status().message());
}

TEST(ConfigTest, ParsesMinimalWithDefaults) {
  auto c = ParseConfig(kMinimal, "test.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.d_model, 64);
  EXPECT_EQ(c->model.head_dim(), 16);
  EXPECT_EQ(c->training.seq_len, 32);
  EXPECT_EQ(c->training.micro_batch, TrainingConfig{}.micro_batch);
  EXPECT_EQ(c->precision, Precision::kFp32);
  EXPECT_EQ(c->data.corpus, DataConfig::Corpus::kBuiltin);
}

TEST(ConfigTest, KeepsTheFp8SectionForTheFp8Library) {
  auto c = ParseConfig(std::string(kMinimal) + "fp8:\n  recipe: current\n  allow_fallback: true\n",
                       "test.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NE(c->fp8_yaml.find("allow_fallback: true"), std::string::npos) << c->fp8_yaml;
  auto plain = ParseConfig(kMinimal, "test.yaml");
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->fp8_yaml.empty());
}

TEST(ConfigTest, UnknownFieldNamesFieldAndFile) {
  std::string msg = ErrorOf(std::string(kMinimal) + "  learning_rate: 0.1\n");
  EXPECT_NE(msg.find("training.learning_rate"), std::string::npos) << msg;
  EXPECT_NE(msg.find("test.yaml"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown field"), std::string::npos) << msg;

  msg = ErrorOf(std::string(kMinimal) + "optimizer:\n  lr: 1\n");
  EXPECT_NE(msg.find("'optimizer'"), std::string::npos) << msg;

  msg = ErrorOf(std::string(kMinimal) + "data:\n  builtin:\n    ordr: 3\n");
  EXPECT_NE(msg.find("data.builtin.ordr"), std::string::npos) << msg;
}

TEST(ConfigTest, BadValuesNameTheField) {
  struct Case {
    std::string append;
    std::string field;
  };
  const Case cases[] = {
      {"  lr: -1\n", "training.lr"},
      {"  lr: abc\n", "training.lr"},
      {"  micro_batch: 0\n", "training.micro_batch"},
      {"  nan_policy: ignore\n", "training.nan_policy"},
      {"  activation_checkpointing: some\n", "training.activation_checkpointing"},
      {"  beta2: 1.0\n", "training.beta2"},
      {"  min_lr: 1.0\n", "training.min_lr"},
      {"precision: fp16\n", "precision"},
      {"parallel:\n  cp_mode: zigzag\n", "parallel.cp_mode"},
      {"data:\n  corpus: path\n", "data.path"},
  };
  for (const Case& c : cases) {
    std::string msg = ErrorOf(std::string(kMinimal) + c.append);
    EXPECT_NE(msg.find(c.field), std::string::npos) << c.append << " -> " << msg;
  }
}

TEST(ConfigTest, CrossFieldChecksNameTheField) {
  std::string bad_heads = kMinimal;
  bad_heads.replace(bad_heads.find("n_kv_heads: 2"), 13, "n_kv_heads: 3");
  EXPECT_NE(ErrorOf(bad_heads).find("model.n_kv_heads"), std::string::npos);

  std::string long_seq = kMinimal;
  long_seq.replace(long_seq.find("seq_len: 32"), 11, "seq_len: 128");
  EXPECT_NE(ErrorOf(long_seq).find("training.seq_len"), std::string::npos);

  std::string bad_d = kMinimal;
  bad_d.replace(bad_d.find("d_model: 64"), 11, "d_model: 66");
  EXPECT_NE(ErrorOf(bad_d).find("model.n_heads"), std::string::npos);

  // Ulysses splits the 4 heads over the cp ranks: 8 ranks cannot share them.
  const std::string ulysses = ErrorOf(std::string(kMinimal) + "parallel:\n  cp: 8\n  cp_mode: ulysses\n");
  EXPECT_NE(ulysses.find("parallel.cp_mode"), std::string::npos) << ulysses;
  EXPECT_NE(ulysses.find("model.n_heads (4)"), std::string::npos) << ulysses;
  // Ring needs no such thing, and ulysses at cp 2 is fine.
  EXPECT_TRUE(ParseConfig(std::string(kMinimal) + "parallel:\n  cp: 8\n  cp_mode: ring\n", "t.yaml").ok());
  EXPECT_TRUE(ParseConfig(std::string(kMinimal) + "parallel:\n  cp: 2\n  cp_mode: ulysses\n", "t.yaml").ok());
}

TEST(ConfigTest, FaultSection) {
  auto plain = ParseConfig(kMinimal, "test.yaml");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->fault.in_process_shrink);
  auto on = ParseConfig(std::string(kMinimal) +
                            "fault:\n  in_process_shrink: true\n  shrink_window_ms: 4000\n",
                        "test.yaml");
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(on->fault.in_process_shrink);
  EXPECT_EQ(on->fault.shrink_window_ms, 4000);
  EXPECT_NE(ErrorOf(std::string(kMinimal) + "fault:\n  in_process_shrnk: true\n")
                .find("fault.in_process_shrnk"),
            std::string::npos);
  EXPECT_NE(ErrorOf(std::string(kMinimal) + "fault:\n  min_dp: 9\n").find("fault.min_dp"),
            std::string::npos);
  EXPECT_NE(ErrorOf(std::string(kMinimal) +
                    "parallel:\n  dp: 2\n  cp: 2\nfault:\n  in_process_shrink: true\n")
                .find("fault.in_process_shrink: needs parallel.cp == 1"),
            std::string::npos);
}

TEST(ConfigTest, Fp8NeedsAnFp8Linear) {
  std::string text = std::string(kMinimal) + "precision: fp8\n";
  std::string msg = ErrorOf(text);
  EXPECT_NE(msg.find("precision"), std::string::npos) << msg;
  EXPECT_NE(msg.find("FP8 Linear"), std::string::npos) << msg;
  ParseOptions with_fp8;
  with_fp8.fp8_linear_available = true;
  auto c = ParseConfig(text, "test.yaml", with_fp8);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->precision, Precision::kFp8);
}

TEST(ConfigTest, NotYamlOrMissingFile) {
  EXPECT_NE(ErrorOf("model: [1, 2").find("not valid YAML"), std::string::npos);
  EXPECT_NE(ErrorOf("model: 3\n").find("model"), std::string::npos);
  auto missing = LoadConfigFile("/nonexistent/x.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/x.yaml"), std::string::npos);
}

TEST(ConfigTest, ShippedConfigsParse) {
  for (const char* name : {"tiny", "small", "1p3b", "long_context"}) {
    auto c = LoadConfigFile(std::string("configs/") + name + ".yaml");
    EXPECT_TRUE(c.ok()) << name << ": " << c.status();
  }
  auto big = LoadConfigFile("configs/1p3b.yaml");
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->model.d_model, 2048);
  EXPECT_EQ(big->model.n_layers, 16);
  EXPECT_EQ(big->model.vocab_size, 50304);
  EXPECT_EQ(big->training.seq_len, 4096);
  EXPECT_EQ(big->training.micro_batch, 4);
  EXPECT_EQ(big->precision, Precision::kBf16);
}

}  // namespace
}  // namespace kp::engine
