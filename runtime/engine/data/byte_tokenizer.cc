#include "runtime/engine/data/byte_tokenizer.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "runtime/common/files.h"
#include "runtime/engine/data/token_file.h"

namespace kp::data {

std::vector<uint32_t> EncodeBytes(std::string_view text) {
  std::vector<uint32_t> out(text.size());
  for (size_t i = 0; i < text.size(); ++i) out[i] = static_cast<unsigned char>(text[i]);
  return out;
}

absl::StatusOr<std::string> DecodeBytes(std::span<const uint32_t> tokens) {
  std::string out(tokens.size(), '\0');
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= kByteVocabSize) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", tokens[i], " at position ", i, " is not a byte (>= 256)"));
    }
    out[i] = static_cast<char>(tokens[i]);
  }
  return out;
}

absl::StatusOr<uint64_t> TokenizeFile(const std::string& in_path, const std::string& out_path) {
  if (!std::filesystem::exists(in_path)) {
    return absl::NotFoundError("tokenize: input " + in_path + " does not exist");
  }
  KP_ASSIGN_OR_RETURN(std::string text, ReadFile(in_path));
  if (text.empty()) return absl::InvalidArgumentError("tokenize: input " + in_path + " is empty");
  const std::vector<uint32_t> tokens = EncodeBytes(text);
  KP_RETURN_IF_ERROR(WriteTokenFile(out_path, tokens, kByteVocabSize));
  return tokens.size();
}

}  // namespace kp::data
