#include "runtime/engine/data/token_file.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "runtime/common/files.h"

namespace kp::data {
namespace {

std::string TmpPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return (std::filesystem::path(dir ? dir : "/tmp") / name).string();
}

std::vector<uint32_t> RandomTokens(size_t n, uint32_t vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<uint32_t> t(n);
  for (auto& x : t) x = gen() % vocab;
  return t;
}

void Overwrite(const std::string& path, uint64_t offset, std::string_view bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST(TokenFile, RoundTripUint16AndUint32) {
  for (uint32_t vocab : {257u, 65536u, 70000u, 1u << 31}) {
    const std::string path = TmpPath("rt_" + std::to_string(vocab) + ".tok");
    const auto tokens = RandomTokens(100003, vocab, vocab);
    ASSERT_TRUE(WriteTokenFile(path, tokens, vocab).ok());
    auto f = TokenFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ((*f)->dtype(), vocab <= 65536 ? TokenDtype::kUint16 : TokenDtype::kUint32);
    EXPECT_EQ((*f)->size(), tokens.size());
    EXPECT_EQ((*f)->vocab_size(), vocab);
    EXPECT_EQ(std::filesystem::file_size(path),
              kTokenFileHeaderSize + tokens.size() * (vocab <= 65536 ? 2 : 4));
    std::vector<int64_t> out(1000);
    ASSERT_TRUE((*f)->Read(5000, out).ok());
    for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], tokens[5000 + i]);
    for (size_t i = 0; i < tokens.size(); i += 997) ASSERT_EQ((*f)->at(i), tokens[i]);
    std::vector<int64_t> past(10);
    EXPECT_EQ((*f)->Read(tokens.size() - 5, past).code(), absl::StatusCode::kOutOfRange);
  }
}

TEST(TokenFile, WriterRejectsOutOfVocabToken) {
  std::vector<uint32_t> tokens = {1, 2, 300};
  absl::Status s = WriteTokenFile(TmpPath("bad.tok"), tokens, 256);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("position 2"), std::string::npos) << s;
}

TEST(TokenFile, MissingFileIsNotFound) {
  auto f = TokenFile::Open(TmpPath("does_not_exist.tok"));
  ASSERT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(f.status().message().find("does_not_exist.tok"), std::string::npos);
}

class Corrupt : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = TmpPath(std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + ".tok");
    tokens_ = RandomTokens(5000, 1000, 7);
    ASSERT_TRUE(WriteTokenFile(path_, tokens_, 1000).ok());
  }
  void ExpectDataLoss(const std::string& cause) {
    auto f = TokenFile::Open(path_);
    ASSERT_EQ(f.status().code(), absl::StatusCode::kDataLoss) << f.status();
    EXPECT_NE(f.status().message().find(path_), std::string::npos) << f.status();
    EXPECT_NE(f.status().message().find(cause), std::string::npos) << f.status();
  }
  std::string path_;
  std::vector<uint32_t> tokens_;
};

TEST_F(Corrupt, WrongMagic) {
  Overwrite(path_, 0, "NOTTOKEN");
  ExpectDataLoss("magic");
}

TEST_F(Corrupt, HeaderChecksum) {
  Overwrite(path_, 16, std::string("\xe9\x03\x00\x00", 4));  // vocab 1001, CRC untouched
  ExpectDataLoss("checksum");
}

TEST_F(Corrupt, Truncated) {
  std::filesystem::resize_file(path_, kTokenFileHeaderSize + 2 * 4000 + 1);
  ExpectDataLoss("truncated");
}

TEST_F(Corrupt, ShorterThanHeader) {
  std::filesystem::resize_file(path_, 20);
  ExpectDataLoss("truncated");
}

TEST_F(Corrupt, TrailingBytes) {
  std::filesystem::resize_file(path_, kTokenFileHeaderSize + 2 * 5000 + 2);
  ExpectDataLoss("trailing");
}

TEST_F(Corrupt, TokenOutOfVocab) {
  Overwrite(path_, kTokenFileHeaderSize + 2 * 4321, std::string("\xff\xff", 2));
  ExpectDataLoss("65535 at position 4321");
}

TEST(TokenFile, ReadChecksTokensOutsideTheOpenWindows) {
  // 3 x 65536 tokens are checked at open; a bad token between them is caught
  // by the read that would feed it to the model.
  const std::string path = TmpPath("big.tok");
  auto tokens = RandomTokens(1 << 19, 100, 3);
  ASSERT_TRUE(WriteTokenFile(path, tokens, 100).ok());
  const uint64_t bad = 100000;
  Overwrite(path, kTokenFileHeaderSize + 2 * bad, std::string("\xc8\x00", 2));  // 200
  auto f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  std::vector<int64_t> out(64);
  absl::Status s = (*f)->Read(bad - 10, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find(path), std::string::npos) << s;
  EXPECT_NE(s.message().find("position 100000"), std::string::npos) << s;
}

}  // namespace
}  // namespace kp::data

namespace kp::data {
namespace {

TEST(TokenFileWriter, StreamsInChunksAndCleansUpWhenAbandoned) {
  const std::string path = TmpPath("stream.tok");
  const auto tokens = RandomTokens(30001, 5000, 9);
  {
    auto w = TokenFileWriter::Create(path, 5000);
    ASSERT_TRUE(w.ok()) << w.status();
    for (size_t i = 0; i < tokens.size(); i += 7000) {
      ASSERT_TRUE((*w)->Append(std::span(tokens).subspan(i, std::min<size_t>(7000, tokens.size() - i))).ok());
    }
    EXPECT_FALSE(std::filesystem::exists(path));  // nothing visible before Finish
    ASSERT_TRUE((*w)->Finish().ok());
    EXPECT_FALSE((*w)->Append(tokens).ok());
  }
  auto f = TokenFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->size(), tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) ASSERT_EQ((*f)->at(i), tokens[i]);

  const std::string abandoned = TmpPath("abandoned.tok");
  {
    auto w = TokenFileWriter::Create(abandoned, 10);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Append(std::vector<uint32_t>{1, 2, 3}).ok());
    EXPECT_EQ((*w)->Append(std::vector<uint32_t>{4, 10}).code(), absl::StatusCode::kInvalidArgument);
  }
  for (const auto& e : std::filesystem::directory_iterator(TmpPath(""))) {
    EXPECT_EQ(e.path().filename().string().find("abandoned.tok"), std::string::npos) << e.path();
  }
}

}  // namespace
}  // namespace kp::data
