// A read-only sequence of token ids that the sampler draws windows from: a
// memory-mapped token file on disk, or tokens held in memory (tests, the
// built-in corpus generated on the fly).
#ifndef KP_RUNTIME_ENGINE_DATA_TOKEN_SOURCE_H_
#define KP_RUNTIME_ENGINE_DATA_TOKEN_SOURCE_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "runtime/common/status.h"

namespace kp::data {

class TokenSource {
 public:
  virtual ~TokenSource() = default;
  // Number of tokens.
  virtual uint64_t size() const = 0;
  // Every token is < vocab_size().
  virtual uint32_t vocab_size() const = 0;
  // A name for error messages (the file's path, or "<memory>").
  virtual const std::string& name() const = 0;
  // Copies tokens [start, start + out.size()) into `out`. OUT_OF_RANGE if the
  // window leaves the source; DATA_LOSS naming the source and position if a
  // token is >= vocab_size() (a corrupt file fails here rather than feeding
  // an out-of-range index to the embedding).
  virtual absl::Status Read(uint64_t start, std::span<int64_t> out) const = 0;
};

// Tokens owned in memory.
class InMemoryTokenSource final : public TokenSource {
 public:
  InMemoryTokenSource(std::vector<uint32_t> tokens, uint32_t vocab_size,
                      std::string name = "<memory>");
  uint64_t size() const override { return tokens_.size(); }
  uint32_t vocab_size() const override { return vocab_size_; }
  const std::string& name() const override { return name_; }
  absl::Status Read(uint64_t start, std::span<int64_t> out) const override;
  const std::vector<uint32_t>& tokens() const { return tokens_; }

 private:
  std::vector<uint32_t> tokens_;
  uint32_t vocab_size_;
  std::string name_;
};

}  // namespace kp::data

#endif  // KP_RUNTIME_ENGINE_DATA_TOKEN_SOURCE_H_
