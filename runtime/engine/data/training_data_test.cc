#include "runtime/engine/data/training_data.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "runtime/common/files.h"
#include "runtime/engine/data/token_file.h"

namespace kp::data {
namespace {

std::string TmpPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return (std::filesystem::path(dir ? dir : "/tmp") / name).string();
}

std::vector<int64_t> ReadAll(const TokenSource& s) {
  std::vector<int64_t> out(s.size());
  EXPECT_TRUE(s.Read(0, out).ok());
  return out;
}

TEST(TrainingData, TextFileIsByteLevel) {
  const std::string path = TmpPath("corpus.txt");
  ASSERT_TRUE(WriteFileAtomically(path, "abc\xff").ok());
  auto src = OpenTrainingData(path);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->vocab_size(), 256u);
  EXPECT_EQ((*src)->name(), path);
  EXPECT_EQ(ReadAll(**src), (std::vector<int64_t>{97, 98, 99, 255}));
}

TEST(TrainingData, TokenFileByExtension) {
  const std::string path = TmpPath("corpus.tok");
  std::vector<uint32_t> tokens = {5, 900, 3, 77};
  ASSERT_TRUE(WriteTokenFile(path, tokens, 1000).ok());
  auto src = OpenTrainingData(path);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->vocab_size(), 1000u);
  EXPECT_EQ(ReadAll(**src), (std::vector<int64_t>{5, 900, 3, 77}));
  // A damaged token file is an error, never text.
  std::filesystem::resize_file(path, 64 + 5);
  EXPECT_EQ(OpenTrainingData(path).status().code(), absl::StatusCode::kDataLoss);
}

TEST(TrainingData, MissingAndEmpty) {
  EXPECT_EQ(OpenTrainingData(TmpPath("none.txt")).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(WriteFileAtomically(TmpPath("empty.txt"), "").ok());
  EXPECT_EQ(OpenTrainingData(TmpPath("empty.txt")).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TrainingData, BuiltinCorpusMatchesGenerator) {
  CorpusSpec spec;
  spec.seed = 77;
  auto src = OpenBuiltinCorpus(spec, 20000, TmpPath("cache"));
  ASSERT_TRUE(src.ok()) << src.status();
  auto corpus = MarkovCorpus::Create(spec);
  ASSERT_TRUE(corpus.ok());
  EXPECT_EQ((*src)->vocab_size(), (*corpus)->vocab_size());
  const auto want = (*corpus)->Generate(20000);
  const auto got = ReadAll(**src);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << i;
}

}  // namespace
}  // namespace kp::data
