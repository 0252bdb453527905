// The kp token file: a 64-byte header then the tokens, little-endian, read
// through mmap so a corpus far larger than memory costs nothing to open.
// Format (docs/FORMATS.md):
//   0  char[8]  magic "KPTOKENS"
//   8  u32      version (1)
//   12 u32      dtype: 1 = uint16 tokens, 2 = uint32 tokens
//   16 u32      vocab_size (every token < vocab_size)
//   20 u32      header_size (64)
//   24 u64      num_tokens
//   32 u8[28]   reserved, zero
//   60 u32      CRC-32 (zlib/IEEE) of bytes [0, 60)
//   64 ...      num_tokens tokens; file size == 64 + num_tokens * width
#ifndef KP_RUNTIME_ENGINE_DATA_TOKEN_FILE_H_
#define KP_RUNTIME_ENGINE_DATA_TOKEN_FILE_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "runtime/common/status.h"
#include "runtime/engine/data/token_source.h"

namespace kp::data {

enum class TokenDtype : uint32_t { kUint16 = 1, kUint32 = 2 };

inline constexpr uint64_t kTokenFileHeaderSize = 64;

// The narrowest dtype that holds ids < vocab_size.
TokenDtype DtypeForVocab(uint32_t vocab_size);

// Writes `tokens` atomically (temporary file, fsync, rename): a reader sees
// the old file or the complete new one. INVALID_ARGUMENT if a token is
// >= vocab_size or vocab_size is 0.
absl::Status WriteTokenFile(const std::string& path, std::span<const uint32_t> tokens,
                            uint32_t vocab_size);

// Streams tokens into a temporary file beside `path`; Finish() writes the
// header and renames the file into place, so memory stays flat for corpora
// of any size. A writer destroyed before Finish() removes its temporary file.
class TokenFileWriter {
 public:
  static absl::StatusOr<std::unique_ptr<TokenFileWriter>> Create(const std::string& path,
                                                                 uint32_t vocab_size);
  ~TokenFileWriter();
  TokenFileWriter(const TokenFileWriter&) = delete;
  TokenFileWriter& operator=(const TokenFileWriter&) = delete;

  // INVALID_ARGUMENT naming the position if a token is >= vocab_size.
  absl::Status Append(std::span<const uint32_t> tokens);
  absl::Status Finish();
  uint64_t num_tokens() const { return num_tokens_; }

 private:
  TokenFileWriter() = default;
  std::string path_, tmp_;
  int fd_ = -1;
  uint32_t vocab_size_ = 0;
  TokenDtype dtype_ = TokenDtype::kUint16;
  uint64_t num_tokens_ = 0;
  std::string buf_;
};

class TokenFile final : public TokenSource {
 public:
  // Maps the file and validates it: NOT_FOUND if missing; DATA_LOSS if the
  // magic, version, dtype or header checksum is wrong, if the size does not
  // match num_tokens (truncated or padded), or if a token in the sampled
  // windows (start, middle, end) is >= vocab_size. Every error names the path.
  static absl::StatusOr<std::unique_ptr<TokenFile>> Open(const std::string& path);
  ~TokenFile() override;
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  uint64_t size() const override { return num_tokens_; }
  uint32_t vocab_size() const override { return vocab_size_; }
  const std::string& name() const override { return path_; }
  absl::Status Read(uint64_t start, std::span<int64_t> out) const override;
  TokenDtype dtype() const { return dtype_; }
  // Unchecked access for tools; i < size().
  uint32_t at(uint64_t i) const;

 private:
  TokenFile() = default;
  std::string path_;
  const uint8_t* map_ = nullptr;
  uint64_t map_size_ = 0;
  uint64_t num_tokens_ = 0;
  uint32_t vocab_size_ = 0;
  TokenDtype dtype_ = TokenDtype::kUint16;
};

}  // namespace kp::data

#endif  // KP_RUNTIME_ENGINE_DATA_TOKEN_FILE_H_
