#include "runtime/engine/data/byte_tokenizer.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>

#include "runtime/common/files.h"
#include "runtime/engine/data/token_file.h"

namespace kp::data {
namespace {

std::string TmpPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return (std::filesystem::path(dir ? dir : "/tmp") / name).string();
}

TEST(ByteTokenizer, RoundTripAllBytes) {
  std::mt19937 gen(11);
  std::string text(10000, '\0');
  for (auto& c : text) c = static_cast<char>(gen() & 0xff);
  text += "plain ASCII and UTF-8: \xc3\xa9\xe2\x82\xac";
  const std::vector<uint32_t> tokens = EncodeBytes(text);
  ASSERT_EQ(tokens.size(), text.size());
  for (size_t i = 0; i < text.size(); ++i) ASSERT_EQ(tokens[i], static_cast<unsigned char>(text[i]));
  auto back = DecodeBytes(tokens);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, text);
}

TEST(ByteTokenizer, DecodeRejectsNonBytes) {
  std::vector<uint32_t> tokens = {65, 66, 256};
  auto s = DecodeBytes(tokens);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("position 2"), std::string::npos);
}

TEST(ByteTokenizer, TokenizeFileWritesATokenFile) {
  const std::string in = TmpPath("in.txt"), out = TmpPath("out.tok");
  std::string text = "The quick brown fox\njumps over the lazy dog.\n\x01\xfe";
  ASSERT_TRUE(WriteFileAtomically(in, text).ok());
  auto n = TokenizeFile(in, out);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, text.size());
  auto f = TokenFile::Open(out);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->vocab_size(), kByteVocabSize);
  std::vector<uint32_t> tokens((*f)->size());
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (*f)->at(i);
  EXPECT_EQ(*DecodeBytes(tokens), text);
}

TEST(ByteTokenizer, TokenizeMissingOrEmptyInput) {
  EXPECT_EQ(TokenizeFile(TmpPath("nope.txt"), TmpPath("x.tok")).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(WriteFileAtomically(TmpPath("empty.txt"), "").ok());
  EXPECT_EQ(TokenizeFile(TmpPath("empty.txt"), TmpPath("x.tok")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kp::data
