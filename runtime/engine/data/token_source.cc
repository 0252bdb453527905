#include "runtime/engine/data/token_source.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace kp::data {

InMemoryTokenSource::InMemoryTokenSource(std::vector<uint32_t> tokens, uint32_t vocab_size,
                                         std::string name)
    : tokens_(std::move(tokens)), vocab_size_(vocab_size), name_(std::move(name)) {}

absl::Status InMemoryTokenSource::Read(uint64_t start, std::span<int64_t> out) const {
  if (start > tokens_.size() || out.size() > tokens_.size() - start) {
    return absl::OutOfRangeError(absl::StrCat(name_, ": window [", start, ", ", start + out.size(),
                                              ") leaves the ", tokens_.size(), " tokens"));
  }
  for (size_t i = 0; i < out.size(); ++i) {
    const uint32_t t = tokens_[start + i];
    if (t >= vocab_size_) {
      return absl::DataLossError(absl::StrCat(name_, ": token ", t, " at position ", start + i,
                                              " is >= vocab_size ", vocab_size_));
    }
    out[i] = t;
  }
  return absl::OkStatus();
}

}  // namespace kp::data
