// The default tokenizer: one token per byte (ids 0..255, no special tokens),
// so any file trains and decoding is exact. Documents are concatenated as
// they come; a model sees raw bytes.
#ifndef KP_RUNTIME_ENGINE_DATA_BYTE_TOKENIZER_H_
#define KP_RUNTIME_ENGINE_DATA_BYTE_TOKENIZER_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/common/status.h"

namespace kp::data {

inline constexpr uint32_t kByteVocabSize = 256;

std::vector<uint32_t> EncodeBytes(std::string_view text);

// INVALID_ARGUMENT naming the position if a token is >= 256.
absl::StatusOr<std::string> DecodeBytes(std::span<const uint32_t> tokens);

// Reads `in_path` and writes its bytes as a uint16 token file (vocab 256) to
// `out_path`, atomically. Returns the number of tokens. NOT_FOUND if the input
// is missing, INVALID_ARGUMENT if it is empty.
absl::StatusOr<uint64_t> TokenizeFile(const std::string& in_path, const std::string& out_path);

}  // namespace kp::data

#endif  // KP_RUNTIME_ENGINE_DATA_BYTE_TOKENIZER_H_
