#include "runtime/engine/data/byte_tokenizer.h"

#include <filesystem>
#include <fstream>

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
  std::ifstream in(in_path, std::ios::binary);
  if (!in) {
    return std::filesystem::exists(in_path)
               ? absl::PermissionDeniedError("tokenize: cannot read input " + in_path)
               : absl::NotFoundError("tokenize: input " + in_path + " does not exist");
  }
  KP_ASSIGN_OR_RETURN(std::unique_ptr<TokenFileWriter> out,
                      TokenFileWriter::Create(out_path, kByteVocabSize));
  // Chunks keep memory flat for inputs of any size.
  std::string chunk(1 << 20, '\0');
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    KP_RETURN_IF_ERROR(out->Append(EncodeBytes(std::string_view(chunk.data(), static_cast<size_t>(n)))));
  }
  if (in.bad()) return absl::DataLossError("tokenize: read error in " + in_path);
  if (out->num_tokens() == 0) return absl::InvalidArgumentError("tokenize: input " + in_path + " is empty");
  KP_RETURN_IF_ERROR(out->Finish());
  return out->num_tokens();
}

}  // namespace kp::data
