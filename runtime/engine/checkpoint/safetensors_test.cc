#include "runtime/engine/checkpoint/safetensors.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "runtime/common/files.h"

namespace kp::ckpt {
namespace {

std::string TmpPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return (std::filesystem::path(dir ? dir : "/tmp") / name).string();
}

// Random data of every dtype; float types go through float32 noise so every
// bit pattern class (signs, exponents) shows up, never zeros.
TensorMap RandomTensors() {
  at::manual_seed(1234);
  TensorMap m;
  m["f64"] = at::randn({3, 4, 5}, at::kDouble);
  m["f32"] = at::randn({17, 3}, at::kFloat);
  m["bf16"] = at::randn({8, 9}).to(at::kBFloat16);
  m["f16"] = at::randn({5, 7}).to(at::kHalf);
  m["i64"] = at::randint(-(int64_t{1} << 40), int64_t{1} << 40, {11}, at::kLong);
  m["i32"] = at::randint(-100000, 100000, {4, 4}, at::kInt);
  m["u8"] = at::randint(0, 256, {33}, at::kByte);
  m["f8_e4m3"] = (at::randn({6, 6}) * 4).to(at::kFloat8_e4m3fn);
  m["f8_e5m2"] = (at::randn({6, 6}) * 100).to(at::kFloat8_e5m2);
  m["scalar"] = at::scalar_tensor(3.25, at::kFloat);
  m["empty"] = at::empty({0, 3}, at::kFloat);
  m["noncontig"] = at::randn({6, 4}).t();
  return m;
}

bool BitwiseEqual(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

TEST(Safetensors, RoundTripEveryDtype) {
  const std::string path = TmpPath("rt.safetensors");
  TensorMap in = RandomTensors();
  ASSERT_TRUE(WriteSafetensors(path, in, {{"step", "42"}, {"note", "hello"}}).ok());
  auto out = ReadSafetensors(path);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->tensors.size(), in.size());
  for (const auto& [name, t] : in) {
    ASSERT_TRUE(out->tensors.count(name)) << name;
    EXPECT_TRUE(BitwiseEqual(out->tensors[name], t)) << name;
  }
  EXPECT_EQ(out->metadata.at("step"), "42");
  EXPECT_EQ(out->metadata.at("note"), "hello");
  EXPECT_TRUE(CheckSafetensorsHeader(path).ok());
}

TEST(Safetensors, LayoutFollowsTheSpec) {
  const std::string path = TmpPath("layout.safetensors");
  at::Tensor t = at::arange(6, at::kInt).reshape({2, 3});
  ASSERT_TRUE(WriteSafetensors(path, {{"a", t}}).ok());
  auto bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok());
  uint64_t n;
  std::memcpy(&n, bytes->data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes->size(), 8 + n + 24);
  const std::string header = bytes->substr(8, n);
  EXPECT_NE(header.find(R"("a":{"data_offsets":[0,24],"dtype":"I32","shape":[2,3]})"), std::string::npos)
      << header;
  int32_t v[6];
  std::memcpy(v, bytes->data() + 8 + n, 24);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(v[i], i);
}

TEST(Safetensors, RejectsUnsupportedDtype) {
  absl::Status s = WriteSafetensors(TmpPath("c.safetensors"), {{"c", at::randn({2}, at::kComplexFloat)}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'c'"), std::string::npos);
}

class CorruptFile : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = TmpPath(std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) +
                    ".safetensors");
    ASSERT_TRUE(WriteSafetensors(path_, RandomTensors()).ok());
    auto b = ReadFile(path_);
    ASSERT_TRUE(b.ok());
    bytes_ = *b;
    std::memcpy(&n_, bytes_.data(), 8);
  }
  void Expect(const std::string& contents, const std::string& cause) {
    ASSERT_TRUE(WriteFileAtomically(path_, contents).ok());
    auto r = ReadSafetensors(path_);
    ASSERT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
    EXPECT_NE(r.status().message().find(path_), std::string::npos) << r.status();
    EXPECT_NE(r.status().message().find(cause), std::string::npos) << r.status();
    EXPECT_EQ(CheckSafetensorsHeader(path_).code(), absl::StatusCode::kDataLoss);
  }
  // Replaces the header with `header`, padded to its old length.
  std::string WithHeader(std::string header) {
    header.resize(n_, ' ');
    return bytes_.substr(0, 8) + header + bytes_.substr(8 + n_);
  }
  std::string header() const { return bytes_.substr(8, n_); }
  std::string path_, bytes_;
  uint64_t n_ = 0;
};

TEST_F(CorruptFile, TruncatedData) { Expect(bytes_.substr(0, bytes_.size() - 5), "truncated"); }
TEST_F(CorruptFile, TruncatedHeader) { Expect(bytes_.substr(0, 8 + n_ / 2), "truncated"); }
TEST_F(CorruptFile, TooShortForLength) { Expect(bytes_.substr(0, 5), "truncated"); }
TEST_F(CorruptFile, InsaneHeaderLength) {
  std::string b = bytes_;
  const uint64_t huge = uint64_t{1} << 50;
  std::memcpy(b.data(), &huge, 8);
  Expect(b, "not sane");
}
TEST_F(CorruptFile, TrailingBytes) { Expect(bytes_ + "xx", "trailing"); }
TEST_F(CorruptFile, BadJson) {
  std::string h = header();
  h[0] = 'x';
  Expect(WithHeader(h), "JSON");
}
TEST_F(CorruptFile, UnknownDtype) {
  std::string h = header();
  h.replace(h.find("\"F64\""), 5, "\"F99\"");
  Expect(WithHeader(h), "unknown dtype");
}
TEST_F(CorruptFile, ShapeDoesNotMatchSize) {
  std::string h = header();
  h.replace(h.find("[3,4,5]"), 7, "[3,4,6]");
  Expect(WithHeader(h), "does not match");
}
TEST_F(CorruptFile, NegativeShape) {
  std::string h = header();
  h.replace(h.find("[3,4,5]"), 7, "[3,-4,5]");
  Expect(WithHeader(h), "negative");
}

// A file from a hand-written header and `data_bytes` bytes of data.
std::string Handmade(const std::string& header, size_t data_bytes) {
  const uint64_t n = header.size();
  std::string b(8, '\0');
  std::memcpy(b.data(), &n, 8);
  return b + header + std::string(data_bytes, '\x5a');
}

TEST_F(CorruptFile, OverlappingOffsets) {
  Expect(Handmade(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})", 12),
         "overlaps");
}

TEST_F(CorruptFile, GapBetweenTensors) {
  Expect(Handmade(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                  R"("b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})", 12),
         "gap");
}

TEST_F(CorruptFile, OffsetsOutOfRange) {
  Expect(Handmade(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 12), "truncated");
}

TEST_F(CorruptFile, MetadataNotStrings) {
  Expect(Handmade(R"({"__metadata__":{"step":3},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 2),
         "__metadata__");
}

TEST(Safetensors, MissingFileIsNotFound) {
  auto r = ReadSafetensors(TmpPath("nothing.safetensors"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("nothing.safetensors"), std::string::npos);
}

}  // namespace
}  // namespace kp::ckpt

namespace kp::ckpt {
namespace {

TEST(SafetensorsMemory, EncodeIsTheFileImageAndDecodesBack) {
  const TensorMap in = RandomTensors();
  const Metadata meta = {{"format", "kp-snapshot"}, {"step", "14"}};
  const std::string path = TmpPath("memory_image.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, in, meta).ok());
  auto bytes = EncodeSafetensors(in, meta);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  std::ifstream f(path, std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(*bytes, file);  // the file loaders read the image as they read the file

  auto out = DecodeSafetensors(*bytes, "image");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->metadata, meta);
  ASSERT_EQ(out->tensors.size(), in.size());
  for (const auto& [name, t] : in) {
    const at::Tensor& got = out->tensors.at(name);
    ASSERT_EQ(got.scalar_type(), t.scalar_type()) << name;
    ASSERT_TRUE(got.sizes().equals(t.sizes())) << name;
    EXPECT_EQ(std::memcmp(got.data_ptr(), t.contiguous().data_ptr(), got.numel() * got.element_size()), 0) << name;
  }
}

TEST(SafetensorsMemory, TruncatedOrCorruptImageIsDataLoss) {
  auto bytes = EncodeSafetensors(RandomTensors());
  ASSERT_TRUE(bytes.ok());
  for (size_t cut : {size_t{0}, size_t{5}, size_t{40}, bytes->size() - 1}) {
    auto r = DecodeSafetensors(std::string_view(*bytes).substr(0, cut), "cut");
    EXPECT_TRUE(absl::IsDataLoss(r.status())) << cut << ": " << r.status();
  }
  std::string bad = *bytes;
  bad[9] = '#';  // the header's JSON
  EXPECT_TRUE(absl::IsDataLoss(DecodeSafetensors(bad, "bad").status()));
}

}  // namespace
}  // namespace kp::ckpt
